//! report.html's plots, drawn with plotters' SVG backend into strings that
//! the page inlines (no fonts, scripts or network needed to view them).

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::oracle::dma_timing::{Blackout, Samples};

/// Size of every plot, px.
const SIZE: (u32, u32) = (900, 340);
/// Frames, NVMe reads, update windows, bars.
const FRAME: RGBColor = RGBColor(31, 119, 180);
const NVME: RGBColor = RGBColor(255, 127, 14);
const UPDATE: RGBColor = RGBColor(214, 39, 40);

/// Draws with `draw` on a fresh white SVG canvas and returns the SVG.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("plot: {e}"))?;
    }
    Ok(out)
}

/// Plotters' errors carry the backend's; they become anyhow errors here.
fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// A log axis's range over `values` (µs), never below 1, with room above
/// the largest for the legend (which sits in the upper left).
fn log_range(values: impl Iterator<Item = u64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi == 0 {
        return 1.0..10.0;
    }
    (lo.max(1) as f64 / 2.0).max(1.0)..hi as f64 * 50.0
}

/// Axis numbers without a fraction where they have none (10, 0.5, 1e6 as 1000000).
fn number(v: &f64) -> String {
    if v.fract().abs() < 1e-9 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// The legend box every plot draws, in its upper left.
fn legend<'a, CT: plotters::coord::CoordTranslate>(c: &mut ChartContext<'a, SVGBackend<'a>, CT>) -> Result<()> {
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

/// Send → DMA latency of each frame (and command → completion of each NVMe
/// read) over the run, each live update's window (kexec request → new
/// agent up) shaded. None: nothing was timed.
pub fn latency_over_time(s: &Samples) -> Result<Option<String>> {
    if s.frames.is_empty() && s.nvme.is_empty() {
        return Ok(None);
    }
    let secs = |us: u64| us as f64 / 1e6;
    let end = s.frames.iter().chain(&s.nvme).map(|p| p[0]).chain(s.updates.iter().flat_map(|u| [Some(u.0), u.1]).flatten()).max().unwrap_or(0);
    let x = 0.0..secs(end).max(0.001) * 1.05;
    let y = log_range(s.frames.iter().chain(&s.nvme).map(|p| p[1]));
    svg(|root| {
        let mut c = ChartBuilder::on(root)
            .caption("Latency over the run (µs, log scale)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x.clone(), y.clone().log_scale())
            .map_err(plot_err)?;
        c.configure_mesh().x_desc("seconds since the run started").y_desc("µs").x_label_formatter(&number).y_label_formatter(&number).draw().map_err(plot_err)?;
        if !s.updates.is_empty() {
            c.draw_series(s.updates.iter().map(|&(from, to)| {
                Rectangle::new([(secs(from), y.start), (to.map_or(x.end, secs), y.end)], UPDATE.mix(0.15).filled())
            }))
            .map_err(plot_err)?
            .label("live update (kexec request → new agent up)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], UPDATE.mix(0.3).filled()));
        }
        if !s.frames.is_empty() {
            c.draw_series(s.frames.iter().map(|p| Circle::new((secs(p[0]), p[1].max(1) as f64), 2, FRAME.filled())))
                .map_err(plot_err)?
                .label("frame: send → device's write of its buffer")
                .legend(|(x, y)| Circle::new((x + 6, y), 3, FRAME.filled()));
        }
        if !s.nvme.is_empty() {
            c.draw_series(s.nvme.iter().map(|p| Circle::new((secs(p[0]), p[1].max(1) as f64), 2, NVME.filled())))
                .map_err(plot_err)?
                .label("NVMe read: command taken → completion queued")
                .legend(|(x, y)| Circle::new((x + 6, y), 3, NVME.filled()));
        }
        legend(&mut c)
    })
    .map(Some)
}

/// Histogram edges: four buckets per decade of µs.
fn log_buckets(values: &[u64]) -> Vec<(f64, f64, u64)> {
    let bucket = |v: u64| ((v.max(1) as f64).log10() * 4.0).floor() as i32;
    let mut counts = std::collections::BTreeMap::<i32, u64>::new();
    for &v in values {
        *counts.entry(bucket(v)).or_default() += 1;
    }
    counts.into_iter().map(|(b, n)| (10f64.powf(b as f64 / 4.0), 10f64.powf((b + 1) as f64 / 4.0), n)).collect()
}

/// How the latencies spread: frames and NVMe reads, four buckets per
/// decade. None: nothing was timed.
pub fn latency_histogram(s: &Samples) -> Result<Option<String>> {
    let frames: Vec<u64> = s.frames.iter().map(|p| p[1]).collect();
    let nvme: Vec<u64> = s.nvme.iter().map(|p| p[1]).collect();
    if frames.is_empty() && nvme.is_empty() {
        return Ok(None);
    }
    let (fb, nb) = (log_buckets(&frames), log_buckets(&nvme));
    let x = {
        let lo = fb.iter().chain(&nb).map(|b| b.0).fold(f64::MAX, f64::min);
        let hi = fb.iter().chain(&nb).map(|b| b.1).fold(0.0, f64::max);
        lo..hi
    };
    let top = fb.iter().chain(&nb).map(|b| b.2).max().unwrap_or(1) as f64 * 1.3;
    svg(|root| {
        let mut c = ChartBuilder::on(root)
            .caption("Latency histogram (µs, log buckets)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x.log_scale(), 0.0..top)
            .map_err(plot_err)?;
        c.configure_mesh().x_desc("µs").y_desc("samples").x_label_formatter(&number).y_label_formatter(&number).draw().map_err(plot_err)?;
        for (buckets, color, label) in [(&fb, FRAME, "frames"), (&nb, NVME, "NVMe reads")] {
            if buckets.is_empty() {
                continue;
            }
            c.draw_series(buckets.iter().map(|&(lo, hi, n)| Rectangle::new([(lo, 0.0), (hi, n as f64)], color.mix(0.6).filled())))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.6).filled()));
        }
        legend(&mut c)
    })
    .map(Some)
}

/// The DMA blackout of each update (ms, log scale) against the injector's
/// frame interval; a blackout that ran to the end of the run is hatched
/// darker. None: no updates.
pub fn blackouts(b: &[Blackout], frame_interval_us: u64) -> Result<Option<String>> {
    if b.is_empty() {
        return Ok(None);
    }
    let ms = |us: u64| (us as f64 / 1000.0).max(0.001);
    let y = {
        let r = log_range(b.iter().map(|b| b.blackout_us).chain((frame_interval_us > 0).then_some(frame_interval_us)));
        r.start / 1000.0..r.end / 1000.0
    };
    let n = b.len() as f64;
    svg(|root| {
        let mut c = ChartBuilder::on(root)
            .caption("DMA blackout per update (ms, log scale)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5..n + 0.5, y.clone().log_scale())
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("update")
            .y_desc("ms")
            .x_labels(b.len().min(20))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&number)
            .draw()
            .map_err(plot_err)?;
        c.draw_series(b.iter().map(|b| {
            let color = if b.to_end_of_run { UPDATE } else { FRAME };
            let x = f64::from(b.index);
            Rectangle::new([(x - 0.35, y.start), (x + 0.35, ms(b.blackout_us))], color.mix(0.7).filled())
        }))
        .map_err(plot_err)?
        .label("longest gap between device writes (red: the device never wrote again)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], FRAME.mix(0.7).filled()));
        if frame_interval_us > 0 {
            let f = ms(frame_interval_us);
            c.draw_series(LineSeries::new([(0.5, f), (n + 0.5, f)], BLACK.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("frame interval ({frame_interval_us} µs)"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK.stroke_width(2)));
        }
        legend(&mut c)
    })
    .map(Some)
}

/// VM downtime of one live update (s) against guest RAM (MiB), one line
/// per method (`lulab bench downtime`). None: no point.
pub fn downtime_vs_ram(series: &[(String, Vec<(u64, u64)>)]) -> Result<Option<String>> {
    let pts = || series.iter().flat_map(|(_, p)| p.iter());
    if pts().next().is_none() {
        return Ok(None);
    }
    let x_max = pts().map(|p| p.0).max().unwrap_or(1) as f64 * 1.1;
    let y_max = pts().map(|p| p.1).max().unwrap_or(1) as f64 / 1000.0 * 1.4;
    let colors = [FRAME, NVME, UPDATE];
    svg(|root| {
        let mut c = ChartBuilder::on(root)
            .caption("Downtime of one live update against guest RAM", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        c.configure_mesh().x_desc("guest RAM (MiB)").y_desc("downtime (s)").x_label_formatter(&number).y_label_formatter(&number).draw().map_err(plot_err)?;
        for (i, (name, p)) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            let xy: Vec<(f64, f64)> = p.iter().map(|&(x, y)| (x as f64, y as f64 / 1000.0)).collect();
            c.draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color.stroke_width(2)));
            c.draw_series(xy.into_iter().map(|xy| Circle::new(xy, 4, color.filled()))).map_err(plot_err)?;
        }
        legend(&mut c)
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_four_per_decade() {
        let b = log_buckets(&[1, 2, 9, 10, 11, 1000, 0]);
        let counts: Vec<u64> = b.iter().map(|b| b.2).collect();
        assert_eq!(counts, [2, 1, 1, 2, 1], "0 counts as 1 µs: [1, 1.78) [1.78, 3.16) [5.62, 10) [10, 17.8) [1000, 1778)");
        assert!((b[3].0 - 10.0).abs() < 1e-9 && (b[4].1 - 1778.279).abs() < 1e-3, "{b:?}");
    }

    #[test]
    fn nothing_timed_draws_nothing() {
        assert!(latency_over_time(&Samples::default()).unwrap().is_none());
        assert!(latency_histogram(&Samples::default()).unwrap().is_none());
        assert!(blackouts(&[], 5000).unwrap().is_none());
        assert!(downtime_vs_ram(&[("copy".into(), vec![])]).unwrap().is_none());
    }

    #[test]
    fn downtime_against_ram_has_a_line_and_points_per_method() {
        let svg = downtime_vs_ram(&[("pkernfs".into(), vec![(64, 27000), (1024, 27500)]), ("copy".into(), vec![(64, 30000), (1024, 90000)])]).unwrap().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("pkernfs") && svg.contains("copy") && svg.contains("guest RAM (MiB)"), "{svg:.300}");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("downtime (s)"), "{svg:.300}");
    }

    #[test]
    fn plots_are_svg_with_their_series() {
        let s = Samples { frames: vec![[1_000_000, 300], [2_000_000, 90_000]], nvme: vec![[1_500_000, 40]], updates: vec![(1_800_000, Some(2_500_000))], frame_interval_us: 5000 };
        let svg = latency_over_time(&s).unwrap().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("live update") && svg.contains("NVMe read"), "{svg:.300}");
        assert_eq!(svg.matches("<circle").count(), 3 + 2, "three samples and two legend marks");
        let h = latency_histogram(&s).unwrap().unwrap();
        assert!(h.contains("NVMe reads"));
        let b = [Blackout { index: 1, blackout_us: 3_000_000, ..Default::default() }, Blackout { index: 2, blackout_us: 9_000_000, to_end_of_run: true, ..Default::default() }];
        let svg = blackouts(&b, 5000).unwrap().unwrap();
        assert!(svg.contains("frame interval (5000 µs)"));
    }
}
