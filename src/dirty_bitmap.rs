//! Persistent dirty bitmaps: what `convert --bitmaps` carries from a source layer to a target
//! writer. A format that stores them (qcow2 today) lists and loads them through its
//! [`Layer`](crate::image::Layer), and says through its [`Driver`](crate::format::Driver)
//! whether a new image with given options can hold them, so the engine names no format.

use crate::error::Result;

/// Whether a bitmap tracks writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// Enabled (qcow2's `auto` flag): every write sets its bits.
    Enabled,
    /// Disabled: its bits stay as they are.
    Disabled,
}

/// A bitmap as a layer lists it, before its bits are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapEntry {
    /// Its name.
    pub name: String,
    /// Saved uncleanly (flagged in use): its bits cannot be trusted.
    pub in_use: bool,
    /// Bytes of the disk one bit covers.
    pub granularity: u64,
}

/// A consistent bitmap whose bits can be read.
pub trait DirtyBitmap: std::fmt::Debug + Send + Sync {
    /// Its name.
    fn name(&self) -> &str;
    /// log2 of the bytes of the disk one bit covers.
    fn granularity_bits(&self) -> u8;
    /// Enabled or disabled.
    fn tracking(&self) -> Tracking;
    /// Bits it holds: one per granularity unit of the disk.
    fn bits(&self) -> u64;
    /// Bytes of bits.
    fn byte_len(&self) -> u64 {
        self.bits().div_ceil(8)
    }
    /// Fills `buf` with the bitmap's bytes from byte `offset`: zeros past its end, and the
    /// bits past its last one cleared.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}
