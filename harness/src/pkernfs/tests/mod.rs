//! Tests of the shared format on the host: unit tests naming each
//! corruption, model-based property tests, and fuzzing of `open`.

mod fuzz;
mod host;
mod model;
mod unit;

use super::format::{FsError, Image, Ino, Kind, ROOT_INO};

/// A freshly formatted image of `mib` MiB.
pub(super) fn fresh(mib: usize) -> Vec<u8> {
    let mut v = vec![0u8; mib << 20];
    Image::format(&mut v, 1).expect("format");
    v
}

/// Creates a file `name` in the root with `len` bytes of a pattern.
pub(super) fn file_with(img: &mut Image<'_>, name: &[u8], len: usize) -> Result<Ino, FsError> {
    let ino = img.create(ROOT_INO, name, Kind::File, 0o644, 2)?;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    img.write(ino, 0, &data, 3)?;
    Ok(ino)
}
