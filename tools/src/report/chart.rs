//! Line charts as inline SVG: axes with ticks (linear or log10), one path
//! per series (with its points drawn as dots when there are few), vertical
//! markers (lines) and bands, and a legend. Nothing but text out: no
//! scripts, no fonts, no network.

use super::escape;

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// log10; values ≤ 0 are not drawn.
    Log,
}

/// One axis: its label, scale, how tick values are written, and optionally
/// the ticks themselves (otherwise chosen from the data).
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub format: fn(f64) -> String,
    pub ticks: Option<Vec<(f64, String)>>,
    /// Linear axes start at zero when true (rates, counts).
    pub from_zero: bool,
}

impl Axis {
    pub fn new(label: &str, scale: Scale, format: fn(f64) -> String) -> Axis {
        Axis {
            label: label.to_string(),
            scale,
            format,
            ticks: None,
            from_zero: false,
        }
    }

    fn map(&self, v: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear if v.is_finite() => Some(v),
            Scale::Log if v.is_finite() && v > 0.0 => Some(v.log10()),
            _ => None,
        }
    }
}

/// A named line through (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A vertical line at `at` or a band from `at` to `until`, in x units; all
/// markers of one `kind` share a colour and a legend entry.
#[derive(Debug, Clone)]
pub struct Marker {
    pub kind: String,
    pub at: f64,
    pub until: Option<f64>,
    /// Shown on hover (the SVG `<title>`).
    pub label: String,
    /// The kind's colour (CSS), or one of a palette by order of appearance.
    pub colour: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// The `<svg>`'s id (letters, digits, '-').
    pub id: String,
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
}

const W: f64 = 980.0;
const H: f64 = 380.0;
/// The plotting area: left, top, right, bottom.
const PLOT: (f64, f64, f64, f64) = (80.0, 36.0, 690.0, 320.0);
const SERIES_COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f",
];
const MARKER_COLOURS: [&str; 7] = [
    "#e41a1c", "#984ea3", "#ff7f00", "#4daf4a", "#377eb8", "#a65628", "#f781bf",
];

/// A mapped interval [lo, hi] (hi > lo).
#[derive(Debug, Clone, Copy)]
struct Span(f64, f64);

impl Span {
    fn of(values: impl Iterator<Item = f64>, axis: &Axis) -> Span {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter_map(|v| axis.map(v)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if let Some(t) = &axis.ticks {
            for v in t.iter().filter_map(|(v, _)| axis.map(*v)) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        match axis.scale {
            Scale::Linear => {
                if axis.from_zero {
                    lo = lo.min(0.0);
                }
                if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
                    (lo, hi) = (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0));
                }
                Span(lo, hi + 0.05 * (hi - lo))
            }
            // Whole decades around the data.
            Scale::Log => {
                let (l, h) = (lo.floor(), hi.ceil());
                Span(l, if h > l { h } else { l + 1.0 })
            }
        }
    }

    /// The pixel of mapped value `v` between `a` (at lo) and `b` (at hi).
    fn px(self, v: f64, a: f64, b: f64) -> f64 {
        a + (v - self.0) / (self.1 - self.0) * (b - a)
    }
}

/// Ticks at 1, 2 or 5 times a power of ten, about six of them.
fn linear_ticks(s: Span) -> Vec<f64> {
    let raw = (s.1 - s.0) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|st| *st >= raw)
        .unwrap_or(10.0 * mag);
    let first = (s.0 / step).ceil() as i64;
    let last = (s.1 / step).floor() as i64;
    (first..=last.min(first + 50))
        .map(|i| i as f64 * step)
        .collect()
}

/// Powers of ten (with 2× and 5× when the span is under three decades),
/// as values (not logs).
fn log_ticks(s: Span) -> Vec<f64> {
    let few = s.1 - s.0 < 3.0;
    let mut t = Vec::new();
    for k in (s.0 as i64)..=(s.1 as i64).min(s.0 as i64 + 40) {
        let p = 10f64.powi(k as i32);
        t.push(p);
        if few && (k as f64) < s.1 {
            t.extend([2.0 * p, 5.0 * p]);
        }
    }
    t
}

fn ticks(axis: &Axis, s: Span) -> Vec<(f64, String)> {
    if let Some(t) = &axis.ticks {
        return t.clone();
    }
    let values = match axis.scale {
        Scale::Linear => linear_ticks(s),
        Scale::Log => log_ticks(s),
    };
    values.into_iter().map(|v| (v, (axis.format)(v))).collect()
}

/// A coordinate for SVG: finite, one decimal.
fn c(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".into()
    }
}

impl Chart {
    /// The chart as one `<svg class="chart">` element.
    pub fn svg(&self) -> String {
        let xs = Span::of(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .chain(
                    self.markers
                        .iter()
                        .flat_map(|m| [Some(m.at), m.until])
                        .flatten(),
                ),
            &self.x,
        );
        let ys = Span::of(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
            &self.y,
        );
        let mut o = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">\n<title>{}</title>\n<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\n<text x=\"{}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
            escape(&self.id),
            escape(&self.title),
            PLOT.0,
            escape(&self.title)
        );
        o.push_str(&self.axes(xs, ys));
        o.push_str(&self.marker_shapes(xs));
        o.push_str(&self.series_paths(xs, ys));
        o.push_str(&self.legend());
        o.push_str("</svg>\n");
        o
    }

    fn axes(&self, xs: Span, ys: Span) -> String {
        let (l, t, r, b) = PLOT;
        let mut o = String::from("<g class=\"axes\" stroke=\"#ccc\">\n");
        for (v, label) in ticks(&self.x, xs) {
            let Some(m) = self
                .x
                .map(v)
                .filter(|m| *m >= xs.0 - 1e-9 && *m <= xs.1 + 1e-9)
            else {
                continue;
            };
            let x = c(xs.px(m, l, r));
            o.push_str(&format!(
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\" fill=\"#333\">{}</text>\n",
                c(t), c(b + 5.0), c(b + 18.0), escape(&label)
            ));
        }
        for (v, label) in ticks(&self.y, ys) {
            let Some(m) = self
                .y
                .map(v)
                .filter(|m| *m >= ys.0 - 1e-9 && *m <= ys.1 + 1e-9)
            else {
                continue;
            };
            let y = c(ys.px(m, b, t));
            o.push_str(&format!(
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/><text x=\"{}\" y=\"{y}\" dy=\"4\" text-anchor=\"end\" stroke=\"none\" fill=\"#333\">{}</text>\n",
                c(l - 5.0), c(r), c(l - 8.0), escape(&label)
            ));
        }
        o.push_str(&format!(
            "<polyline points=\"{l},{t} {l},{b} {r},{b}\" fill=\"none\" stroke=\"#333\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\" fill=\"#000\">{}</text>\n<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\" stroke=\"none\" fill=\"#000\">{}</text>\n</g>\n",
            c((l + r) / 2.0),
            c(b + 40.0),
            escape(&self.x.label),
            c((t + b) / 2.0),
            escape(&self.y.label)
        ));
        o
    }

    /// Kinds of marker in order of first appearance, with their colours.
    fn marker_kinds(&self) -> Vec<(&str, &'static str)> {
        let mut kinds: Vec<(&str, &'static str)> = Vec::new();
        for m in &self.markers {
            if !kinds.iter().any(|k| k.0 == m.kind) {
                let colour = MARKER_COLOURS[kinds.len() % MARKER_COLOURS.len()];
                kinds.push((&m.kind, m.colour.unwrap_or(colour)));
            }
        }
        kinds
    }

    fn marker_shapes(&self, xs: Span) -> String {
        let (l, t, r, b) = PLOT;
        let kinds = self.marker_kinds();
        let mut o = String::from("<g class=\"markers\">\n");
        for m in &self.markers {
            let colour = kinds
                .iter()
                .find(|k| k.0 == m.kind)
                .map_or(MARKER_COLOURS[0], |k| k.1);
            let Some(a) = self.x.map(m.at) else { continue };
            let x0 = xs.px(a, l, r).clamp(l, r);
            let tip = format!("<title>{}</title>", escape(&m.label));
            match m.until.and_then(|u| self.x.map(u)) {
                Some(u) => {
                    let x1 = xs.px(u, l, r).clamp(l, r);
                    o.push_str(&format!(
                        "<rect class=\"marker band\" data-kind=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\" fill-opacity=\"0.15\" stroke=\"{colour}\" stroke-opacity=\"0.4\">{tip}</rect>\n",
                        escape(&m.kind), c(x0), c(t), c((x1 - x0).max(1.0)), c(b - t)
                    ));
                }
                None => o.push_str(&format!(
                    "<line class=\"marker\" data-kind=\"{}\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"5 3\">{tip}</line>\n",
                    escape(&m.kind), c(x0), c(t), c(x0), c(b)
                )),
            }
        }
        o.push_str("</g>\n");
        o
    }

    fn series_paths(&self, xs: Span, ys: Span) -> String {
        let (l, t, r, b) = PLOT;
        let mut o = String::new();
        for (i, s) in self.series.iter().enumerate() {
            let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|&(x, y)| {
                    Some((xs.px(self.x.map(x)?, l, r), ys.px(self.y.map(y)?, b, t)))
                })
                .collect();
            let d: Vec<String> = pts
                .iter()
                .enumerate()
                .map(|(j, (x, y))| format!("{}{} {}", if j == 0 { 'M' } else { 'L' }, c(*x), c(*y)))
                .collect();
            o.push_str(&format!(
                "<g class=\"series\" data-name=\"{}\" stroke=\"{colour}\" fill=\"{colour}\">\n<path d=\"{}\" fill=\"none\" stroke-width=\"2\"/>\n",
                escape(&s.name),
                d.join(" ")
            ));
            if pts.len() <= 40 {
                for (x, y) in &pts {
                    o.push_str(&format!(
                        "<circle cx=\"{}\" cy=\"{}\" r=\"3\"/>\n",
                        c(*x),
                        c(*y)
                    ));
                }
            }
            o.push_str("</g>\n");
        }
        o
    }

    fn legend(&self) -> String {
        let x = PLOT.2 + 20.0;
        // (colour, swatch: line, dashed line or band, text)
        let mut entries: Vec<(&str, u8, &str)> = Vec::new();
        for (i, s) in self.series.iter().enumerate() {
            entries.push((SERIES_COLOURS[i % SERIES_COLOURS.len()], 0, &s.name));
        }
        for (kind, colour) in self.marker_kinds() {
            let band = self
                .markers
                .iter()
                .any(|m| m.kind == kind && m.until.is_some());
            entries.push((colour, 1 + band as u8, kind));
        }
        let mut o = String::from("<g class=\"legend\">\n");
        for (i, (colour, swatch, text)) in entries.into_iter().enumerate() {
            let y = PLOT.1 + 4.0 + 18.0 * i as f64;
            o.push_str(&match swatch {
                0 => format!(
                    "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"3\"/>",
                    c(x), c(y), c(x + 20.0), c(y)
                ),
                1 => format!(
                    "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>",
                    c(x + 10.0), c(y - 7.0), c(x + 10.0), c(y + 7.0)
                ),
                _ => format!(
                    "<rect x=\"{}\" y=\"{}\" width=\"20\" height=\"10\" fill=\"{colour}\" fill-opacity=\"0.3\"/>",
                    c(x), c(y - 5.0)
                ),
            });
            o.push_str(&format!(
                "<text x=\"{}\" y=\"{}\">{}</text>\n",
                c(x + 26.0),
                c(y + 4.0),
                escape(text)
            ));
        }
        o.push_str("</g>\n");
        o
    }
}

/// Ticks of a percentile axis whose values are 1 / (1 - p) (log scale,
/// HdrHistogram style): 0%, 50%, 90%, 99%, 99.9%, ... up to the first at
/// or past `max_x`.
pub fn percentile_ticks(max_x: f64) -> Vec<(f64, String)> {
    let mut t = vec![(1.0, "0%".to_string()), (2.0, "50%".to_string())];
    let mut k = 1;
    while k < 12 && (k == 1 || 10f64.powi(k - 1) < max_x) {
        let label = format!("{:.*}%", (k - 2).max(0) as usize, 100.0 - 10f64.powi(2 - k));
        t.push((10f64.powi(k), label));
        k += 1;
    }
    t
}
