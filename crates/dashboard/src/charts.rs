//! Small server-rendered SVG bar charts (no script, no external asset):
//! the Caches page's generation sizes and hit/miss over time. Colours come
//! from `app.css` classes, never inline styles (the Content-Security-Policy
//! allows no inline style).

use std::fmt::Write;

use crate::html::escape;

/// One bar: stacked segments `(css class, value)` bottom up, a label
/// under it (may be empty) and what hovering it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<(&'static str, u64)>,
    pub tooltip: String,
}

/// A bar chart `width`×`height` pixels with `title` for screen readers;
/// bars scale to the largest total. An empty `bars` draws the title only.
pub fn bar_chart(title: &str, class: &str, bars: &[Bar], width: u32, height: u32) -> String {
    let labels = bars.iter().any(|b| !b.label.is_empty());
    let axis = if labels { 14 } else { 0 };
    let plot = height.saturating_sub(axis).max(1) as f64;
    let max = bars.iter().map(|b| b.segments.iter().map(|s| s.1).sum::<u64>()).max().unwrap_or(0).max(1) as f64;
    let slot = width as f64 / bars.len().max(1) as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart {}\" role=\"img\" aria-label=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><title>{}</title>",
        escape(class),
        escape(title),
        escape(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar_w) / 2.0;
        let mut top = plot;
        let _ = write!(out, "<g class=\"bar\"><title>{}</title>", escape(&b.tooltip));
        for (cls, v) in &b.segments {
            let h = *v as f64 / max * (plot - 1.0);
            if *v == 0 {
                continue;
            }
            // At least a pixel: a small value is still seen.
            let h = h.max(1.0);
            top -= h;
            let _ = write!(out, "<rect class=\"{}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\"></rect>", escape(cls));
        }
        out.push_str("</g>");
        if !b.label.is_empty() {
            let _ = write!(out, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x + bar_w / 2.0, height - 2, escape(&b.label));
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(v: &[u64]) -> Bar {
        Bar { label: String::new(), segments: v.iter().map(|v| ("hit", *v)).collect(), tooltip: "t".into() }
    }

    #[test]
    fn each_bar_is_a_group_with_a_rect_per_non_zero_segment_scaled_to_the_largest() {
        let svg = bar_chart("sizes", "gens", &[bar(&[50]), bar(&[100]), bar(&[0, 10])], 90, 41);
        assert_eq!(svg.matches("<g class=\"bar\">").count(), 3);
        assert_eq!(svg.matches("<rect ").count(), 3);
        assert!(svg.contains("height=\"40.0\""), "the largest bar fills the plot: {svg}");
        assert!(svg.contains("height=\"20.0\""), "{svg}");
    }

    #[test]
    fn titles_labels_and_tooltips_are_escaped() {
        let b = Bar { label: "<b>".into(), segments: vec![("hit", 1)], tooltip: "\"x\" & <y>".into() };
        let svg = bar_chart("a <script>", "c", &[b], 10, 30);
        assert!(!svg.contains("<script>") && !svg.contains("<b>") && !svg.contains("<y>"), "{svg}");
        assert!(svg.contains("&quot;x&quot; &amp; &lt;y&gt;"));
    }

    #[test]
    fn no_bars_is_an_empty_chart_with_its_title() {
        let svg = bar_chart("nothing yet", "c", &[], 100, 20);
        assert!(svg.contains("<title>nothing yet</title>") && !svg.contains("<rect"));
    }
}
