//! `--report DIR` of verity-bench and verity-chaos: the SVG writer makes
//! well-formed markup with finite numbers and readable log-axis labels, and
//! the real tools' pages render in a real browser (headless Chromium draws
//! every plotted series and the chaos run's fault markers, and the
//! screenshot is not blank).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TmpDir;
use verity_tools::report::chart::{percentile_ticks, Axis, Chart, Marker, Scale, Series};
use verity_tools::report::{escape, micros, si, Page};

/// Checks that every tag is closed in order (a small XML reader: enough
/// for what the writer makes), and returns the names of the elements.
fn balanced(doc: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = doc;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let end = rest.find('>').expect("a tag is closed with '>'");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
            continue;
        }
        let name: String = tag.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(!name.is_empty(), "<{tag}> has no name");
        names.push(name.clone());
        let void = ["meta", "br"].contains(&name.as_str());
        if !tag.ends_with('/') && !void {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "never closed: {stack:?}");
    names
}

/// Every numeric attribute and path coordinate is a finite number.
fn numbers_finite(svg: &str) {
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    for attr in [
        "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "width", "height",
    ] {
        let key = format!(" {attr}=\"");
        for part in svg.split(&key).skip(1) {
            let v = &part[..part.find('"').unwrap()];
            let n: f64 = v.parse().unwrap_or_else(|e| panic!("{attr}={v:?}: {e}"));
            assert!(n.is_finite(), "{attr}={v}");
        }
    }
    for part in svg.split(" d=\"").skip(1) {
        let d = &part[..part.find('"').unwrap()];
        for w in d.split([' ', 'M', 'L']).filter(|w| !w.is_empty()) {
            let n: f64 = w.parse().unwrap_or_else(|e| panic!("d {w:?}: {e}"));
            assert!(n.is_finite(), "d {w}");
        }
    }
}

fn latency_chart() -> Chart {
    let mut x = Axis::new("percentile", Scale::Log, |v| format!("{v}"));
    x.ticks = Some(percentile_ticks(20_000.0));
    Chart {
        id: "lat".into(),
        title: "latency <&> \"quoted\"".into(),
        x,
        y: Axis::new("latency", Scale::Log, micros),
        series: vec![
            Series {
                name: "engine <b>".into(),
                // Points a log axis cannot draw (0, negative, NaN, inf) are left out.
                points: vec![
                    (1.0, 30.0),
                    (2.0, 90.0),
                    (10.0, 0.0),
                    (100.0, f64::NAN),
                    (1e3, 4000.0),
                    (2e4, 45_000.0),
                    (f64::INFINITY, 1.0),
                    (5.0, -3.0),
                ],
            },
            Series {
                name: "raw pipe".into(),
                points: vec![(1.0, 5.0), (20_000.0, 9_000.0)],
            },
        ],
        markers: vec![],
    }
}

#[test]
fn the_svg_is_well_formed_with_finite_numbers_and_readable_log_axes() {
    let svg = latency_chart().svg();
    let names = balanced(&svg);
    assert_eq!(names.iter().filter(|n| *n == "svg").count(), 1);
    assert_eq!(names.iter().filter(|n| *n == "path").count(), 2, "{svg}");
    numbers_finite(&svg);
    // Text is escaped.
    assert!(
        svg.contains("latency &lt;&amp;&gt; &quot;quoted&quot;"),
        "{svg}"
    );
    assert!(
        svg.contains("engine &lt;b&gt;") && !svg.contains("<b>"),
        "{svg}"
    );
    // The percentile axis, HdrHistogram style, and the latency decades.
    for label in ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
        assert!(svg.contains(&format!(">{label}</text>")), "{label}: {svg}");
    }
    for label in ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms"] {
        assert!(svg.contains(&format!(">{label}</text>")), "{label}: {svg}");
    }
    // Of the first series' eight points four are drawable (at 1, 2, 1e3
    // and 2e4): four dots.
    let first = svg.split("<g class=\"series\"").nth(1).unwrap();
    let first = &first[..first.find("</g>").unwrap()];
    assert_eq!(first.matches("<circle").count(), 4, "{first}");
}

#[test]
fn markers_bands_legend_and_linear_ticks() {
    let mut y = Axis::new("records/s", Scale::Linear, si);
    y.from_zero = true;
    let c = Chart {
        id: "timeline".into(),
        title: "t".into(),
        x: Axis::new("seconds", Scale::Linear, verity_tools::report::seconds),
        y,
        series: vec![Series {
            name: "input".into(),
            points: (0..50)
                .map(|i| (i as f64 * 0.1, 1000.0 * i as f64))
                .collect(),
        }],
        markers: vec![
            Marker {
                kind: "kill -9".into(),
                at: 1.0,
                until: None,
                label: "kill -9 w1".into(),
                colour: None,
            },
            Marker {
                kind: "pause".into(),
                at: 2.0,
                until: Some(2.5),
                label: "SIGSTOP w2".into(),
                colour: Some("#123456"),
            },
            Marker {
                kind: "kill -9".into(),
                at: 3.0,
                until: None,
                label: "kill -9 w2".into(),
                colour: None,
            },
        ],
    };
    let svg = c.svg();
    balanced(&svg);
    numbers_finite(&svg);
    assert_eq!(svg.matches("class=\"marker\"").count(), 2, "{svg}");
    assert_eq!(svg.matches("class=\"marker band\"").count(), 1, "{svg}");
    // A kind's own colour, on its band and in the legend.
    assert_eq!(svg.matches("fill=\"#123456\"").count(), 2, "{svg}");
    // One legend entry per series and per kind of marker.
    let legend = &svg[svg.find("<g class=\"legend\">").unwrap()..];
    assert_eq!(legend.matches("<text").count(), 3, "{legend}");
    // Many points: a line without dots. Ticks from zero, in k.
    assert_eq!(svg.matches("<circle").count(), 0);
    assert!(
        svg.contains(">0</text>") && svg.contains(">40k</text>"),
        "{svg}"
    );
    assert!(svg.contains(">2 s</text>"), "{svg}");
    // A page around it is well formed too, its render check included.
    let mut p = Page::new("a <page>");
    p.chart(&c)
        .table(&["a", "b"], &[vec!["1".into(), "<2>".into()]]);
    let html = p.html();
    balanced(&html);
    assert!(html.contains("<pre id=\"render-check\">") && html.contains("getBBox"));
    assert_eq!(escape("a&b"), "a&amp;b");
}

/// A child killed after `limit`: Ok(exit code) or Err(why).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Option<i32>, String> {
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let until = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st.code());
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish in {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Chromium on PATH; the test fails (never skips) without it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("chromium is not on PATH: these tests open the --report pages in headless Chromium (Debian: apt-get install chromium)")
        })
}

/// Opens `page` in headless Chromium (a private profile, killed after
/// 60 s): the DOM after its script ran, and a screenshot's size in bytes.
fn render(page: &Path, scratch: &Path) -> (String, u64) {
    let url = format!("file://{}", page.display());
    let browse = |extra: &[String], out: &Path| {
        let profile = scratch.join(format!("profile-{}", extra.len()));
        let stdout = std::fs::File::create(out).unwrap();
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null());
        let code = run_bounded(&mut cmd, Duration::from_secs(60)).unwrap();
        assert_eq!(code, Some(0), "{cmd:?}");
    };
    let dom_file = scratch.join("dom.html");
    browse(&["--dump-dom".into()], &dom_file);
    let png = scratch.join("shot.png");
    browse(
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1000,1600".into(),
        ],
        &scratch.join("shot.log"),
    );
    let dom = std::fs::read_to_string(&dom_file).unwrap();
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        png.display()
    );
    (dom, bytes.len() as u64)
}

/// The render check's measures of each chart: (id, series, drawn, markers).
fn measured(dom: &str) -> Vec<(String, u64, u64, u64)> {
    let at = dom
        .find("<pre id=\"render-check\">")
        .expect("the render check")
        + 23;
    let json = &dom[at..at + dom[at..].find("</pre>").unwrap()];
    assert!(
        json.starts_with("{\"charts\":["),
        "the script did not run: {json}"
    );
    let num = |obj: &str, key: &str| -> u64 {
        let v = &obj[obj.find(&format!("\"{key}\":")).unwrap() + key.len() + 3..];
        v[..v.find([',', '}']).unwrap()].parse().unwrap()
    };
    json.split("{\"id\":\"")
        .skip(1)
        .map(|o| {
            let id = o[..o.find('"').unwrap()].to_string();
            (id, num(o, "series"), num(o, "drawn"), num(o, "markers"))
        })
        .collect()
}

/// The engine beside the tools (`cargo build --release` puts it there).
fn engine() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_verity-bench"));
    let e = bench.with_file_name("verity");
    assert!(
        e.is_file(),
        "{} not found: build the engine first (cargo build --release)",
        e.display()
    );
    e
}

#[test]
fn verity_bench_report_renders_in_a_browser() {
    let chromium = chromium();
    let t = TmpDir::new("report", "bench");
    let dir = t.join("report");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verity-bench"));
    cmd.arg("--engine")
        .arg(engine())
        .args(["--app", "doubler", "--messages", "200000", "--rounds", "2"])
        .args([
            "--latency-seconds",
            "1",
            "--latency-rate",
            "100000",
            "--report",
        ])
        .arg(&dir)
        .stdout(Stdio::null());
    let code = run_bounded(&mut cmd, Duration::from_secs(300)).unwrap();
    assert_eq!(code, Some(0), "{cmd:?}");
    let page = dir.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("engine/raw") && html.contains("p99.9"),
        "the figures' text"
    );
    let (dom, png) = render(&page, &t);
    let charts = measured(&dom);
    let ids: Vec<&str> = charts.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        ids,
        ["throughput-doubler", "latency-doubler"],
        "{chromium:?}: {dom}"
    );
    for (id, series, drawn, _) in &charts {
        assert!(
            *series >= 2 && drawn == series,
            "{id}: {drawn} of {series} series drawn"
        );
    }
    assert!(png > 30_000, "the screenshot is blank ({png} bytes)");
}

#[test]
fn verity_chaos_report_renders_in_a_browser() {
    chromium();
    let t = TmpDir::new("report", "chaos");
    let dir = t.join("report");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verity-chaos"));
    cmd.arg("--engine")
        .arg(engine())
        .args(["--app", "doubler", "--workers", "2", "--messages", "300000"])
        .args(["--profile", "crashes", "--seed", "1", "--dir"])
        .arg(t.join("run"))
        .arg("--report")
        .arg(&dir)
        .stdout(Stdio::null());
    let code = run_bounded(&mut cmd, Duration::from_secs(300)).unwrap();
    assert_eq!(code, Some(0), "{cmd:?}");
    let page = dir.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("check: PASS"), "the verdict");
    // The crashes profile kills every worker and the receiver, and pauses.
    for kind in [
        "kill -9 of a worker",
        "kill -9 of the receiver",
        "pause (SIGSTOP to SIGCONT)",
    ] {
        assert!(
            html.contains(&format!("data-kind=\"{kind}\"")),
            "{kind} marked"
        );
    }
    let (dom, png) = render(&page, &t);
    let charts = measured(&dom);
    assert_eq!(charts.len(), 1, "{dom}");
    let (id, series, drawn, markers) = &charts[0];
    assert_eq!(id, "timeline-1");
    assert!(
        *series == 2 && drawn == series,
        "{drawn} of {series} series drawn"
    );
    assert!(*markers >= 4, "{markers} markers drawn");
    assert!(png > 30_000, "the screenshot is blank ({png} bytes)");
}

/// A chaos run's rates are the counts' differences over each bucket; the
/// page holds its chart, its events and the verdict.
#[test]
fn a_timeline_gives_rates_per_bucket_and_a_page() {
    use verity_tools::report::chaos::{page, EventKind, SeedReport, Timeline};
    let mut t = Timeline::new(Instant::now());
    t.samples = vec![
        (0.0, 0, 0),
        (0.1, 1000, 500),
        (0.2, 1000, 900),
        (0.3, 3000, 800),
    ];
    let (inputs, outputs) = t.rates();
    let r = |v: &[(f64, f64)]| v.iter().map(|p| p.1.round() as u64).collect::<Vec<_>>();
    assert_eq!(r(&inputs), [10_000, 0, 20_000]);
    // A count that went back (a fresh file) is no negative rate.
    assert_eq!(r(&outputs), [5_000, 4_000, 0]);
    t.mark_secs(EventKind::Kill, 0.15, None, "kill -9 of w1".into());
    t.mark_secs(EventKind::Partition, 0.05, Some(0.25), "w1 | w2".into());
    let html = page(
        "a <scenario>",
        &[SeedReport {
            seed: 7,
            verdict: "check: PASS".into(),
            reproduce: "verity-chaos --seed 7".into(),
            timeline: Some(t),
        }],
    );
    balanced(&html);
    numbers_finite(&html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()]);
    assert!(html.contains("id=\"timeline-7\"") && html.contains("a &lt;scenario&gt;"));
    assert!(
        html.contains("data-kind=\"kill -9 of a worker\"")
            && html.contains("data-kind=\"partition\"")
    );
}
