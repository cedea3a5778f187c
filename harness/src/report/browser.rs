//! A headless Chromium that renders report.html to a PNG, to show that the
//! page a reader opens has its plots (the report test looks at the pixels).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Names Debian and others install Chromium under.
const NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];
/// How long one screenshot may take (a cold start under load is seconds).
const DEADLINE: Duration = Duration::from_secs(120);

/// The browser binary on `PATH`.
pub fn find() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in NAMES {
        if let Some(p) = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()) {
            return Ok(p);
        }
    }
    bail!("no {} on PATH (`lulab test` installs Debian's chromium)", NAMES.join(" / "))
}

/// Renders `html` at `width`×`height` px into the PNG `png`. The browser
/// runs with its own throw-away profile and is killed if it overruns.
pub fn screenshot(html: &Path, png: &Path, width: u32, height: u32) -> Result<()> {
    let browser = find()?;
    let html = html.canonicalize().with_context(|| format!("{}", html.display()))?;
    let profile = tempfile_dir(png)?;
    let mut cmd = Command::new(&browser);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {}", browser.display()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            bail!("{} took longer than {DEADLINE:?} to render {}", browser.display(), html.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_dir_all(&profile);
    let out = child.wait_with_output()?;
    if !status.success() || !png.exists() {
        bail!("{} failed to render {} ({status}): {}", browser.display(), html.display(), crate::cmd::tail(&out.stderr, 10));
    }
    Ok(())
}

/// A fresh profile directory beside `png`.
fn tempfile_dir(png: &Path) -> Result<PathBuf> {
    let dir = png.with_extension(format!("profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// What a screenshot shows, enough to tell a page with plots from a blank one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pixels {
    /// Pixels in the image.
    pub total: u64,
    /// Pixels that are not (near) white.
    pub inked: u64,
    /// Pixels of a saturated colour (the plots' series; text is grey).
    pub coloured: u64,
}

/// Counts the pixels of the PNG `png` (8-bit RGB or RGBA).
pub fn pixels(png: &Path) -> Result<Pixels> {
    let file = std::fs::File::open(png).with_context(|| format!("opening {}", png.display()))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().with_context(|| format!("{}: not a PNG", png.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).with_context(|| format!("decoding {}", png.display()))?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => bail!("{}: colour type {other:?}, expected RGB(A)", png.display()),
    };
    if info.bit_depth != png::BitDepth::Eight {
        bail!("{}: bit depth {:?}, expected 8", png.display(), info.bit_depth);
    }
    let mut p = Pixels { total: 0, inked: 0, coloured: 0 };
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        let (r, g, b) = (px[0], px[1], px[2]);
        p.total += 1;
        if r.min(g).min(b) < 235 {
            p.inked += 1;
        }
        if r.max(g).max(b) - r.min(g).min(b) > 60 {
            p.coloured += 1;
        }
    }
    Ok(p)
}
