//! HTML reports with inline SVG plots (`verity-bench --report DIR`,
//! `verity-chaos --report DIR`): one self-contained `DIR/index.html`, no
//! JavaScript library and nothing fetched from the network. The page's one
//! tiny inline script only measures what the browser drew (each chart's
//! plotted series and markers) into `<pre id="render-check">`, so a test
//! can open the page in a headless browser and see that the plots render.
//!
//! - [`chart`]: line charts (axes, ticks, log scales, markers, legend).
//! - [`bench`]: the bench page (throughput per round, latency percentiles,
//!   the figures).
//! - [`chaos`]: the chaos page (input and output rates over time, with what
//!   the run did marked), and [`chaos::Timeline`], what a run records.

pub mod bench;
pub mod chaos;
pub mod chart;

use std::path::{Path, PathBuf};

/// Text for XML/HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `v` with at most two decimals, trailing zeros dropped.
fn short(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// A count or rate with k/M/G: `1.5M`, `200k`, `12`.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", short(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", short(v / 1e3))
    } else {
        short(v)
    }
}

/// Microseconds as µs, ms or s.
pub fn micros(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{} s", short(v / 1e6))
    } else if a >= 1e3 {
        format!("{} ms", short(v / 1e3))
    } else {
        format!("{} µs", short(v))
    }
}

/// Seconds: `1.5 s`.
pub fn seconds(v: f64) -> String {
    format!("{} s", short(v))
}

/// Measures each chart once the page is laid out: for every `svg.chart`,
/// its series (and how many have a non-empty bounding box) and markers.
const RENDER_CHECK: &str = r#"<script>
(function () {
  var charts = [];
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var series = svg.querySelectorAll('g.series'), drawn = 0, w = 0, h = 0;
    series.forEach(function (g) {
      var b = g.getBBox();
      if (b.width > 0 || b.height > 0) drawn++;
      w = Math.max(w, b.width); h = Math.max(h, b.height);
    });
    charts.push({id: svg.id, series: series.length, drawn: drawn, width: w, height: h,
                 markers: svg.querySelectorAll('.marker').length});
  });
  document.getElementById('render-check').textContent = JSON.stringify({charts: charts});
})();
</script>
"#;

/// An HTML page being built: headings, paragraphs, charts, tables.
pub struct Page {
    body: String,
    title: String,
}

impl Page {
    pub fn new(title: &str) -> Page {
        Page {
            body: String::new(),
            title: title.to_string(),
        }
    }

    pub fn h2(&mut self, text: &str) -> &mut Page {
        self.body.push_str(&format!("<h2>{}</h2>\n", escape(text)));
        self
    }

    pub fn p(&mut self, text: &str) -> &mut Page {
        self.body.push_str(&format!("<p>{}</p>\n", escape(text)));
        self
    }

    pub fn pre(&mut self, text: &str) -> &mut Page {
        self.body
            .push_str(&format!("<pre>{}</pre>\n", escape(text)));
        self
    }

    pub fn chart(&mut self, c: &chart::Chart) -> &mut Page {
        self.body.push_str("<figure>\n");
        self.body.push_str(&c.svg());
        self.body.push_str("</figure>\n");
        self
    }

    /// A table: a header row, then rows of cells.
    pub fn table(&mut self, head: &[&str], rows: &[Vec<String>]) -> &mut Page {
        let cells = |tag: &str, r: &mut dyn Iterator<Item = &str>| -> String {
            r.map(|c| format!("<{tag}>{}</{tag}>", escape(c))).collect()
        };
        self.body.push_str("<table>\n<tr>");
        self.body.push_str(&cells("th", &mut head.iter().copied()));
        self.body.push_str("</tr>\n");
        for row in rows {
            self.body.push_str("<tr>");
            self.body
                .push_str(&cells("td", &mut row.iter().map(String::as_str)));
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
        self
    }

    /// The whole document.
    pub fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>\nbody {{ font-family: sans-serif; margin: 2em; color: #222; }}\ntable {{ border-collapse: collapse; margin: 1em 0; }}\nth, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}\nth:first-child, td:first-child {{ text-align: left; }}\nfigure {{ margin: 1em 0; }}
svg.chart {{ max-width: 100%; height: auto; }}\npre {{ background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }}\n</style>\n</head>\n<body>\n<h1>{t}</h1>\n{}<pre id=\"render-check\">not measured</pre>\n{RENDER_CHECK}</body>\n</html>\n",
            self.body,
            t = escape(&self.title)
        )
    }
}

/// Writes `html` to `dir/index.html` (creating `dir`); the error names the
/// path.
pub fn write(dir: &Path, html: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("index.html");
    std::fs::write(&path, html).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
