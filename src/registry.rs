//! Which applications an engine binary can run: a [`Registry`] of names and
//! the functions that build them. The built-in `verity` binary runs
//! [`Registry::builtin`] (the four reference apps); a user crate adds its own
//! apps and gets the whole engine command line for them from
//! [`crate::cli::main`]. Every part that turns an app name into an app (the
//! configuration's checks, the worker, `replay`, the simulator) takes the
//! registry, so yesterday's journal replays through today's registered code.
//!
//! ```
//! use verity::app::{pipeline, App, Reject};
//! use verity::registry::Registry;
//!
//! fn echo() -> impl App {
//!     pipeline("echo")
//!         .source("lines", |_, b: &[u8]| Ok::<_, Reject>(b.to_vec()))
//!         .key_by(|_: &Vec<u8>| 0u8)
//!         .to_state(|v: Vec<u8>, _: &mut (), emit: &mut dyn FnMut(Vec<u8>)| emit(v))
//!         .to_sink(|v: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(v))
//! }
//!
//! let registry = Registry::builtin().with("echo", echo);
//! assert!(registry.build("echo").is_some());
//! assert!(registry.build("market-spread").is_some());
//! assert_eq!(registry.sources("echo"), Some(vec!["lines"]));
//! ```
//!
//! For `demo` and `sim` an app also registers an input generator, and it
//! may register its own oracle, judged on top of the generic one (every
//! node's journal replayed against what the sink holds):
//!
//! ```
//! # use verity::app::{pipeline, App, Reject};
//! use verity::registry::{AppInputs, Registry};
//! # fn echo() -> impl App {
//! #     pipeline("echo")
//! #         .source("lines", |_, b: &[u8]| Ok::<_, Reject>(b.to_vec()))
//! #         .key_by(|_: &Vec<u8>| 0u8)
//! #         .to_state(|v: Vec<u8>, _: &mut (), emit: &mut dyn FnMut(Vec<u8>)| emit(v))
//! #         .to_sink(|v: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(v))
//! # }
//!
//! /// `n` lines on the one source; each comes out once.
//! fn lines(seed: u64, n: u64) -> AppInputs {
//!     AppInputs {
//!         sources: vec![(0..n).map(|i| format!("{seed}:{i}").into_bytes()).collect()],
//!         expected_outputs: n,
//!     }
//! }
//!
//! /// Echo's own oracle: every output is one of the inputs.
//! fn same_lines(inputs: &AppInputs, outputs: &[Vec<u8>]) -> Result<String, String> {
//!     let all: std::collections::BTreeSet<&Vec<u8>> = inputs.sources[0].iter().collect();
//!     match outputs.iter().find(|o| !all.contains(o)) {
//!         None => Ok(format!("{} outputs, each an input", outputs.len())),
//!         Some(o) => Err(format!("{:?} is not an input", String::from_utf8_lossy(o))),
//!     }
//! }
//!
//! let registry = Registry::builtin()
//!     .with("echo", echo)
//!     .with_inputs("echo", lines)
//!     .with_oracle("echo", same_lines);
//! let generate = registry.inputs("echo").unwrap();
//! let inputs = generate(7, 3);
//! assert_eq!(inputs.sources[0][2], b"7:2");
//! let judge = registry.oracle("echo").unwrap();
//! assert!(judge(&inputs, &inputs.sources[0]).is_ok());
//! assert!(judge(&inputs, &[b"nope".to_vec()]).is_err());
//! ```

use std::sync::Arc;

use crate::app::App;

type Build = Arc<dyn Fn() -> Box<dyn App> + Send + Sync>;

/// A run's inputs, made by an app's generator ([`Registry::with_inputs`]):
/// per source, in source order (source channel `c` is `sources[c - 1]`),
/// its records; and how many outputs they make, so a run knows when it is
/// done. The demo, `verity-chaos` and the simulator use it for an app
/// `verity-check` does not know, and judge the run with the generic oracle
/// (`crate::harness::oracle`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppInputs {
    pub sources: Vec<Vec<Vec<u8>>>,
    pub expected_outputs: u64,
}

/// An app's input generator: `(seed, messages)` to inputs, deterministic
/// in the seed.
pub type GenerateInputs = fn(seed: u64, messages: u64) -> AppInputs;

/// An app's own oracle, run on top of the generic one: from the inputs
/// and every output payload the sink holds (per output channel in seq
/// order, the channels one after another), `Ok(summary)` or `Err(what is
/// wrong)`.
pub type AppOracle = fn(inputs: &AppInputs, outputs: &[Vec<u8>]) -> Result<String, String>;

/// One registered app: its name, its sources, and how to build an instance.
/// A configuration that names an app holds its `AppSpec`, so whoever runs
/// the configuration (the worker, `replay`) builds the app it was checked
/// against.
#[derive(Clone)]
pub struct AppSpec {
    name: String,
    sources: Vec<&'static str>,
    build: Build,
}

impl AppSpec {
    /// The name it is registered under (the `app` configuration key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its source names, in order: source channel `c` is `sources()[c - 1]`.
    pub fn sources(&self) -> &[&'static str] {
        &self.sources
    }

    /// A new instance, in its initial state.
    pub fn build(&self) -> Box<dyn App> {
        (self.build)()
    }
}

impl core::fmt::Debug for AppSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AppSpec({:?}, sources {:?})", self.name, self.sources)
    }
}

impl core::fmt::Display for AppSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Two specs are the same app when name and sources agree.
impl PartialEq for AppSpec {
    fn eq(&self, other: &AppSpec) -> bool {
        self.name == other.name && self.sources == other.sources
    }
}

impl Eq for AppSpec {}

/// App names and how to build each app.
#[derive(Clone, Default)]
pub struct Registry {
    apps: Vec<(String, Build)>,
    /// Input generators, by app name.
    inputs: Vec<(String, GenerateInputs)>,
    /// Apps' own oracles, by app name.
    oracles: Vec<(String, AppOracle)>,
}

impl core::fmt::Debug for Registry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Registry {
    /// No apps.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The reference apps: doubler, word-count, sequence-window and
    /// market-spread (`crate::apps`).
    pub fn builtin() -> Registry {
        use crate::apps::{doubler, market_spread, sequence_window, word_count};
        Registry::empty()
            .with("doubler", doubler::app)
            .with("word-count", word_count::app)
            .with("sequence-window", sequence_window::app)
            .with("market-spread", market_spread::app)
    }

    /// This registry and app `name`, built by `build`. A name registered
    /// before is replaced: a user crate may override a built-in app.
    pub fn with<A: App + 'static>(mut self, name: &str, build: fn() -> A) -> Registry {
        let b: Build = Arc::new(move || Box::new(build()) as Box<dyn App>);
        match self.apps.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = b,
            None => self.apps.push((name.to_owned(), b)),
        }
        self
    }

    /// This registry with `generate` as app `name`'s input generator: what
    /// `demo` and the simulator feed it (checked by the generic oracle).
    pub fn with_inputs(mut self, name: &str, generate: GenerateInputs) -> Registry {
        self.inputs.retain(|(n, _)| n != name);
        self.inputs.push((name.to_owned(), generate));
        self
    }

    /// This registry with `oracle` as app `name`'s own oracle, judged on
    /// top of the generic one wherever the app's inputs come from its
    /// generator (demo, the simulator).
    pub fn with_oracle(mut self, name: &str, oracle: AppOracle) -> Registry {
        self.oracles.retain(|(n, _)| n != name);
        self.oracles.push((name.to_owned(), oracle));
        self
    }

    /// App `name`'s own oracle, if it registered one.
    pub fn oracle(&self, name: &str) -> Option<AppOracle> {
        self.oracles
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| *o)
    }

    /// App `name`'s input generator, if it registered one.
    pub fn inputs(&self, name: &str) -> Option<GenerateInputs> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, g)| *g)
    }

    /// A new instance of app `name` (`None`: not registered).
    pub fn build(&self, name: &str) -> Option<Box<dyn App>> {
        self.apps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, build)| build())
    }

    /// App `name`'s spec (`None`: not registered).
    pub fn get(&self, name: &str) -> Option<AppSpec> {
        let (n, build) = self.apps.iter().find(|(n, _)| n == name)?;
        Some(AppSpec {
            name: n.clone(),
            sources: build().sources().to_vec(),
            build: build.clone(),
        })
    }

    /// Whether app `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.apps.iter().any(|(n, _)| n == name)
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.apps.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The source names of app `name`, in order (source `i` arrives on
    /// input channel `i + 1`).
    pub fn sources(&self, name: &str) -> Option<Vec<&'static str>> {
        self.get(name).map(|s| s.sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_the_four_reference_apps_and_with_replaces() {
        let r = Registry::builtin();
        assert_eq!(
            r.names(),
            ["doubler", "word-count", "sequence-window", "market-spread"]
        );
        assert_eq!(r.sources("market-spread"), Some(vec!["nbbo", "orders"]));
        assert!(r.build("nope").is_none());
        let r = r.with("doubler", crate::apps::word_count::app);
        assert_eq!(r.names().len(), 4, "a name registered again is replaced");
        assert_eq!(
            r.build("doubler").map(|a| a.name().to_owned()).as_deref(),
            Some("word-count")
        );
    }
}
