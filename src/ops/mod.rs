//! The image operations built on the in-place interface of [`crate::edit`], generic over every
//! format: [`commit`] (a top's data into its backing image), [`rebase`] (a new backing image,
//! the data that differs copied first), [`dd`] (a slice of an image into a new one) and
//! [`measure`] (the size a conversion needs).
//!
//! Each asks the drivers only through [`crate::format::Driver`]: a format gains these
//! operations by implementing `open_mut`, `set_backing` and `measure`.

pub mod commit;
pub mod dd;
pub mod measure;
pub mod rebase;

use crate::error::{Error, Result};
use crate::image::{Allocation, Image};
use std::time::{Duration, Instant};

/// Bytes read and written per step: large enough to amortise system calls, small enough to
/// keep memory small whatever the image.
const STEP: u64 = 2 << 20;

/// How a run of a chain reads when only the layers above `stop` are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    /// The run's length (never 0).
    len: u64,
    /// How the first layer that holds the run holds it; [`Allocation::Unallocated`] when no
    /// layer above `stop` does.
    allocation: Allocation,
    /// Which layer answered.
    depth: usize,
}

/// The status of `[offset, offset + max_len)` of `image` seen through its layers
/// `0..stop` only (what `commit` copies and what a top alone holds).
fn status_above(image: &Image, stop: usize, offset: u64, max_len: u64) -> Result<Status> {
    let layers = image.layers();
    let stop = stop.min(layers.len());
    let mut len = max_len;
    for (depth, layer) in layers.iter().enumerate().take(stop) {
        let size = layer.virtual_size();
        if offset >= size {
            // A parent smaller than its child holds nothing past its end.
            continue;
        }
        let m = layer
            .map(offset, len.min(size - offset))
            .map_err(|e| e.with_path(layer.path()))?;
        if m.start != offset || m.length == 0 || m.length > len {
            return Err(Error::corrupt(format!(
                "internal mapping error: asked for {offset}+{len}, got {}+{}",
                m.start, m.length
            ))
            .with_path(layer.path()));
        }
        len = m.length;
        if m.allocation != Allocation::Unallocated {
            return Ok(Status {
                len,
                allocation: m.allocation,
                depth,
            });
        }
    }
    Ok(Status {
        len,
        allocation: Allocation::Unallocated,
        depth: stop.saturating_sub(1),
    })
}

/// Reads a run [`status_above`] described: the answering layer's data, or zeros.
fn read_status(image: &Image, status: &Status, offset: u64, buf: &mut [u8]) -> Result<()> {
    if status.allocation == Allocation::Data {
        let layer = &image.layers()[status.depth];
        layer
            .read_data(offset, buf)
            .map_err(|e| e.with_path(layer.path()))
    } else {
        buf.fill(0);
        Ok(())
    }
}

/// `-r RATE`: at most this many bytes a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rate {
    /// As fast as the disks go.
    #[default]
    Unlimited,
    /// Bytes per second.
    Limit(u64),
}

impl Rate {
    /// Parses `-r RATE` by qemu-img's rules (its `cvtnum`, see [`crate::size::cvtnum`]);
    /// 0 means no limit. The messages are qemu-img's, which scripts may match.
    pub fn parse(text: &str) -> Result<Rate> {
        Ok(match crate::size::cvtnum("rate limit", text)? {
            0 => Rate::Unlimited,
            n => Rate::Limit(n),
        })
    }
}

/// Keeps a copy under its [`Rate`] by sleeping between steps.
pub(crate) struct Throttle {
    rate: Rate,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub(crate) fn new(rate: Rate) -> Throttle {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Waits until the bytes counted so far are due at the rate, then counts `n` more: the
    /// first step goes at once, as qemu's rate limit lets the first request through.
    pub(crate) fn wait_then_account(&mut self, n: u64) {
        self.account(0);
        self.bytes += n;
    }

    /// Counts `n` bytes copied and waits until the rate allows more.
    pub(crate) fn account(&mut self, n: u64) {
        self.bytes += n;
        if let Rate::Limit(limit) = self.rate
            && limit > 0
        {
            let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}

/// Progress reports: bytes of the virtual disk done, of the total.
pub type OnProgress<'a> = &'a mut dyn FnMut(u64, u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_holds_the_rate() {
        let mut t = Throttle::new(Rate::Limit(1 << 20));
        let start = Instant::now();
        t.account(128 << 10);
        assert!(start.elapsed() >= Duration::from_millis(120));
        let mut free = Throttle::new(Rate::Unlimited);
        free.account(u64::MAX / 2);
    }

    #[test]
    fn rates_parse_as_qemu_img_parses_them() {
        for (text, rate) in [
            ("1M", Rate::Limit(1 << 20)),
            ("1b", Rate::Limit(1)),
            ("1.5k", Rate::Limit(1536)),
            (" 5", Rate::Limit(5)),
            ("1.0", Rate::Limit(1)),
            ("7E", Rate::Limit(7 << 60)),
            ("0", Rate::Unlimited),
        ] {
            assert_eq!(Rate::parse(text).unwrap(), rate, "{text}");
        }
        for text in ["1X", "1e3", "0.5", "", "1kB", "1KiB", "5k5", "1 k", "."] {
            let e = Rate::parse(text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("Invalid rate limit specified: '{text}'.")),
                "{e}"
            );
        }
        for text in ["8E", "-1", "-0", "99999999999999999999999"] {
            let e = Rate::parse(text).unwrap_err().to_string();
            assert!(
                e.contains("Must be between 0 and 9223372036854775807."),
                "{e}"
            );
        }
    }
}
