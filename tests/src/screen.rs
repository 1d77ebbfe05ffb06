//! Screenshots: decoding PNGs and comparing two pictures of the same screen.
//!
//! QEMU's VGA text mode blinks the cursor, so two captures of the static SeaBIOS
//! screen taken a moment apart may differ in the one character cell under the cursor.
//! [`Diff::within_cell`] tells such a difference from a real one.

use std::io::BufReader;
use std::path::Path;

use anyhow::Context as _;

/// An 8-bit image, `channels` bytes per pixel, row major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per pixel.
    pub channels: usize,
    /// The pixels.
    pub pixels: Vec<u8>,
}

impl Image {
    /// Decodes an 8-bit PNG file.
    pub fn load_png(path: &Path) -> anyhow::Result<Image> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut reader = png::Decoder::new(BufReader::new(file))
            .read_info()
            .with_context(|| format!("decode {}", path.display()))?;
        let size = reader.output_buffer_size().context("PNG too large")?;
        let mut pixels = vec![0; size];
        let info = reader.next_frame(&mut pixels).context("decode PNG frame")?;
        anyhow::ensure!(
            info.bit_depth == png::BitDepth::Eight,
            "{}: {:?} bit depth, expected 8",
            path.display(),
            info.bit_depth
        );
        pixels.truncate(info.line_size * info.height as usize);
        let width = info.width as usize;
        Ok(Image {
            width,
            height: info.height as usize,
            channels: info.line_size / width.max(1),
            pixels,
        })
    }
}

/// Where two same-sized pictures differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diff {
    /// Number of differing pixels.
    pub pixels: usize,
    /// Bounding box of the differing pixels: (x0, y0, x1, y1), inclusive.
    pub bbox: Option<(usize, usize, usize, usize)>,
}

impl Diff {
    /// Compares two pictures pixel by pixel (`bpp` bytes per pixel, row major, same
    /// size).
    pub fn of(width: usize, bpp: usize, a: &[u8], b: &[u8]) -> anyhow::Result<Diff> {
        anyhow::ensure!(
            a.len() == b.len(),
            "pictures of {} and {} bytes",
            a.len(),
            b.len()
        );
        let mut diff = Diff {
            pixels: 0,
            bbox: None,
        };
        for (i, (pa, pb)) in a.chunks(bpp).zip(b.chunks(bpp)).enumerate() {
            if pa != pb {
                let (x, y) = (i % width, i / width);
                diff.pixels += 1;
                diff.bbox = Some(match diff.bbox {
                    None => (x, y, x, y),
                    Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
                });
            }
        }
        Ok(diff)
    }

    /// Compares two decoded images.
    pub fn of_images(a: &Image, b: &Image) -> anyhow::Result<Diff> {
        anyhow::ensure!(
            (a.width, a.height, a.channels) == (b.width, b.height, b.channels),
            "images differ in size: {}x{}x{} vs {}x{}x{}",
            a.width,
            a.height,
            a.channels,
            b.width,
            b.height,
            b.channels
        );
        Diff::of(a.width, a.channels, &a.pixels, &b.pixels)
    }

    /// True if nothing differs.
    pub fn identical(&self) -> bool {
        self.pixels == 0
    }

    /// True if all differences fit in one VGA text cell (9x16 pixels; the blinking
    /// cursor).
    pub fn within_cell(&self) -> bool {
        match self.bbox {
            None => true,
            Some((x0, y0, x1, y1)) => x1 - x0 < 9 && y1 - y0 < 16,
        }
    }
}
