//! The checker's verdict: counts per class and the first problems found.

use std::fmt;

/// Problem lines kept in [`CheckReport::first_problems`].
pub const MAX_PROBLEM_LINES: usize = 10;

/// Classes of bad records, in the manner of Jepsen's queue checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Lost,
    Duplicated,
    Reordered,
    Wrong,
    Unexpected,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Lost => "lost",
            Class::Duplicated => "duplicated",
            Class::Reordered => "reordered",
            Class::Wrong => "wrong",
            Class::Unexpected => "unexpected",
        }
    }
}

/// Result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The app's name.
    pub app: String,
    /// Outputs the inputs must produce.
    pub expected: u64,
    /// Records in the received file.
    pub received: u64,
    /// Expected outputs received (first delivery) with a correct payload.
    pub ok: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub wrong: u64,
    pub unexpected: u64,
    /// The first [`MAX_PROBLEM_LINES`] problems, one line each.
    pub first_problems: Vec<String>,
    /// Problems found beyond those in `first_problems`.
    pub more_problems: u64,
}

impl CheckReport {
    pub fn new(app: impl fmt::Display) -> CheckReport {
        CheckReport {
            app: app.to_string(),
            expected: 0,
            received: 0,
            ok: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            wrong: 0,
            unexpected: 0,
            first_problems: Vec::new(),
            more_problems: 0,
        }
    }

    /// The report as one JSON object (`--json`, tools/FORMATS.md).
    pub fn to_json(&self) -> String {
        crate::json::Obj::new()
            .str("check", if self.passed() { "pass" } else { "fail" })
            .str("app", &self.app)
            .int("expected", self.expected)
            .int("received", self.received)
            .int("ok", self.ok)
            .int("lost", self.lost)
            .int("duplicated", self.duplicated)
            .int("reordered", self.reordered)
            .int("wrong", self.wrong)
            .int("unexpected", self.unexpected)
            .strs("first_problems", &self.first_problems)
            .int("more_problems", self.more_problems)
            .build()
    }

    /// True when no record is lost, duplicated, reordered, wrong or unexpected.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.wrong == 0
            && self.unexpected == 0
    }

    /// Counts one problem of `class` and keeps its line if there is room.
    pub fn problem(&mut self, class: Class, line: impl FnOnce() -> String) {
        match class {
            Class::Lost => self.lost += 1,
            Class::Duplicated => self.duplicated += 1,
            Class::Reordered => self.reordered += 1,
            Class::Wrong => self.wrong += 1,
            Class::Unexpected => self.unexpected += 1,
        }
        if self.first_problems.len() < MAX_PROBLEM_LINES {
            self.first_problems
                .push(format!("{}: {}", class.name(), line()));
        } else {
            self.more_problems += 1;
        }
    }

    /// `check: PASS app=APP expected=N received=N lost=0 duplicated=0 reordered=0 wrong=0 unexpected=0`
    pub fn summary_line(&self) -> String {
        format!(
            "check: {} app={} expected={} received={} lost={} duplicated={} reordered={} wrong={} unexpected={}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.app,
            self.expected,
            self.received,
            self.lost,
            self.duplicated,
            self.reordered,
            self.wrong,
            self.unexpected
        )
    }
}

impl fmt::Display for CheckReport {
    /// The summary line, then one indented line per kept problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary_line())?;
        for line in &self.first_problems {
            write!(f, "\n  {line}")?;
        }
        if self.more_problems > 0 {
            write!(f, "\n  ... and {} more problems", self.more_problems)?;
        }
        Ok(())
    }
}
