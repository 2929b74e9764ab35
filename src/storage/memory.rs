//! Bytes in memory as a storage (fuzzing, tests, small generated files).

use super::{Storage, fits, past_end};
use crate::error::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A storage holding its bytes in memory.
#[derive(Clone)]
pub struct Memory {
    name: PathBuf,
    bytes: Arc<[u8]>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Memory {
    /// A storage named `name` (for messages) holding `bytes`.
    pub fn new(name: impl Into<PathBuf>, bytes: impl Into<Arc<[u8]>>) -> Memory {
        Memory {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Storage for Memory {
    fn name(&self) -> &Path {
        &self.name
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !fits(offset, buf.len(), self.len()) {
            return Err(past_end(self, buf.len(), offset));
        }
        let start = offset as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
        Ok(())
    }
}
