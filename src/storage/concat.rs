//! Several storages read as one: the parts of an OVF chunked file (`disk.vmdk.000000000`,
//! `.000000001`, ...), each usually a window into the same tar.

use super::{Storage, fits, past_end};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The concatenation of several storages, in order.
#[derive(Debug, Clone)]
pub struct Concat {
    parts: Vec<Arc<dyn Storage>>,
    /// Where each part starts; one more entry than parts, the last being the total length.
    starts: Vec<u64>,
    name: PathBuf,
}

impl Concat {
    /// The parts read one after the other, named `name` in messages. Errors inside a part name
    /// the part (and the offset within it). Fails when the total length overflows.
    pub fn new(parts: Vec<Arc<dyn Storage>>, name: impl Into<PathBuf>) -> Result<Concat> {
        let name = name.into();
        let mut starts = Vec::with_capacity(parts.len() + 1);
        let mut total = 0u64;
        starts.push(0);
        for p in &parts {
            total = total.checked_add(p.len()).ok_or_else(|| {
                Error::corrupt("the parts' total length overflows").with_path(&name)
            })?;
            starts.push(total);
        }
        Ok(Concat {
            parts,
            starts,
            name,
        })
    }

    /// The parts.
    pub fn parts(&self) -> &[Arc<dyn Storage>] {
        &self.parts
    }

    /// The part holding byte `offset` (which must be below the length), skipping empty parts.
    fn part_at(&self, offset: u64) -> usize {
        // The last start <= offset among parts that are not empty.
        self.starts[1..].partition_point(|&end| end <= offset)
    }
}

impl Concat {
    /// Reads `buf` at `offset` part by part with `read`.
    fn read_parts(
        &self,
        buf: &mut [u8],
        offset: u64,
        read: impl Fn(&dyn Storage, &mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        if !fits(offset, buf.len(), self.len()) {
            return Err(past_end(self, buf.len(), offset));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let i = self.part_at(at);
            let local = at - self.starts[i];
            let n = ((self.starts[i + 1] - at) as usize).min(buf.len() - done);
            read(self.parts[i].as_ref(), &mut buf[done..done + n], local)?;
            done += n;
        }
        Ok(())
    }
}

impl Storage for Concat {
    fn name(&self) -> &Path {
        &self.name
    }

    fn len(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_parts(buf, offset, |part, buf, at| part.read_exact_at(buf, at))
    }

    fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_parts(buf, offset, |part, buf, at| {
            part.read_exact_at_cached(buf, at)
        })
    }

    fn prefetch(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.len());
        let mut at = offset;
        while at < end {
            let i = self.part_at(at);
            let n = (self.starts[i + 1] - at).min(end - at);
            self.parts[i].prefetch(at - self.starts[i], n);
            at += n;
        }
    }

    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        let mut at = offset;
        while at < self.len() {
            let i = self.part_at(at);
            if let Some(d) = self.parts[i].next_data(at - self.starts[i])? {
                return Ok(Some(self.starts[i] + d));
            }
            at = self.starts[i + 1];
        }
        Ok(None)
    }

    fn next_hole(&self, offset: u64) -> Result<u64> {
        let mut at = offset;
        while at < self.len() {
            let i = self.part_at(at);
            let hole = self.starts[i] + self.parts[i].next_hole(at - self.starts[i])?;
            if hole < self.starts[i + 1] {
                return Ok(hole);
            }
            at = self.starts[i + 1];
        }
        Ok(self.len())
    }

    fn allocated_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.allocated_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Memory, StorageExt};

    #[test]
    fn reads_cross_part_boundaries() {
        let parts: Vec<Arc<dyn Storage>> = vec![
            Arc::new(Memory::new("p0", vec![0u8, 1, 2])),
            Arc::new(Memory::new("empty", Vec::new())),
            Arc::new(Memory::new("p1", vec![3u8, 4])),
            Arc::new(Memory::new("p2", vec![5u8, 6, 7, 8])),
        ];
        let c = Concat::new(parts, "disk.vmdk").unwrap();
        assert_eq!(c.len(), 9);
        assert_eq!(
            c.read_vec(0, 9, "all").unwrap(),
            (0..9).collect::<Vec<u8>>()
        );
        assert_eq!(c.read_vec(2, 5, "mid").unwrap(), vec![2, 3, 4, 5, 6]);
        assert_eq!(c.read_vec(3, 1, "one").unwrap(), vec![3]);
        let err = c.read_vec(5, 5, "x").unwrap_err().to_string();
        assert!(err.contains("disk.vmdk"), "{err}");
        let mut b = [0u8; 2];
        assert!(c.read_exact_at(&mut b, u64::MAX).is_err());
        assert_eq!(c.next_data(4).unwrap(), Some(4));
        assert_eq!(c.next_hole(0).unwrap(), 9);
        let none = Concat::new(Vec::new(), "none").unwrap();
        assert_eq!(none.len(), 0);
        assert_eq!(none.next_data(0).unwrap(), None);
    }

    #[test]
    fn an_error_inside_a_part_names_the_part() {
        #[derive(Debug)]
        struct Liar;
        impl Storage for Liar {
            fn name(&self) -> &Path {
                Path::new("disk.vmdk.001")
            }
            fn len(&self) -> u64 {
                10
            }
            fn read_exact_at(&self, _: &mut [u8], offset: u64) -> Result<()> {
                Err(Error::corrupt("unreadable")
                    .at_offset(offset)
                    .with_path(self.name()))
            }
        }
        let c = Concat::new(
            vec![
                Arc::new(Memory::new("disk.vmdk.000", vec![1u8; 10])),
                Arc::new(Liar),
            ],
            "disk.vmdk",
        )
        .unwrap();
        let err = c.read_vec(8, 4, "x").unwrap_err().to_string();
        assert!(
            err.contains("disk.vmdk.001") && err.contains("offset 0"),
            "{err}"
        );
    }
}
