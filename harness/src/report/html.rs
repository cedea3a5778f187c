//! `report.html`: report.md as HTML with the run's plots inlined as SVG,
//! one self-contained file (no scripts, stylesheets or fonts fetched).

use anyhow::Result;

use super::plots;
use super::Report;
use crate::oracle::dma_timing::{DmaTiming, Samples};

/// Page style: readable tables, plots at their natural size.
const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}\
th{background:#eee}pre,code{background:#f6f6f6}pre{padding:.6em;overflow-x:auto}\
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}";

/// `&`, `<`, `>` and `"` escaped, for the page title.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The plots of `report` (with its samples, when the run has them), as
/// `<figure>`s.
fn figures(report: &Report, samples: Option<&Samples>) -> Result<String> {
    let mut out = String::new();
    let mut add = |svg: Option<String>, caption: &str| {
        if let Some(svg) = svg {
            out.push_str(&format!("<figure>\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n"));
        }
    };
    if let Some(s) = samples {
        add(plots::latency_over_time(s)?, "Each timed frame's send → DMA latency and each NVMe read's command → completion, from QEMU's trace; live updates shaded.");
        add(plots::latency_histogram(s)?, "The same samples as a histogram.");
    }
    let timing = report.sections.get("dma_timing").and_then(|v| serde_json::from_value::<DmaTiming>(v.clone()).ok());
    if let Some(t) = timing {
        add(plots::blackouts(&t.blackouts, t.frame_interval_us)?, "The longest gap between two device writes from each update's kexec request to the new agent's first refill.");
    }
    Ok(out)
}

/// The page: the title and verdict of report.md, the plots, then the rest of report.md.
pub fn render(report: &Report, samples: Option<&Samples>) -> Result<String> {
    Ok(page(&report.scenario, &report.markdown(), &figures(report, samples)?))
}

/// A self-contained page of `md` with `figures` (inline SVG `<figure>`s)
/// under a "Plots" heading before its first section.
pub fn page(title: &str, md: &str, figures: &str) -> String {
    let opts = pulldown_cmark::Options::ENABLE_TABLES;
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, pulldown_cmark::Parser::new_ext(md, opts));
    let plots = if figures.is_empty() { String::new() } else { format!("<h2>Plots</h2>\n{figures}") };
    // The plots go before the first section, after the title and verdict.
    let at = body.find("<h2").unwrap_or(body.len());
    body.insert_str(at, &plots);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>lulab: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}
