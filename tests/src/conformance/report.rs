//! The summary table: one row per case (pass, FAIL, skipped with its reason, and
//! what a passing case could not check) and one for the cleanup.

use std::time::Duration;

use super::{Mode, Outcome, Suite};

/// The error of a case that does not apply in this mode: the reason is shown in
/// the table, the case is neither passed nor failed.
#[derive(Debug)]
pub struct Skipped(pub String);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skipped {}

/// A row's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything the case checks was checked and held.
    Pass,
    /// What was checked held; the row's notes say what was not checked.
    PassPartly,
    /// The case failed; the error.
    Fail(String),
    /// The case did not run; why.
    Skipped(String),
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub took: Duration,
    pub verdict: Verdict,
    /// What the case could not check (e.g. the remote side without its kubeconfig).
    pub not_checked: Vec<String>,
}

/// The rows (cases, then the cleanup) and the one-line summary.
#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Row>,
    pub summary: String,
}

/// The name of the cleanup's row.
pub const CLEANUP: &str = "cleanup (namespace delete, both sides)";

impl From<Outcome> for Row {
    fn from(o: Outcome) -> Row {
        let verdict = match o.result {
            Ok(()) if o.not_checked.is_empty() => Verdict::Pass,
            Ok(()) => Verdict::PassPartly,
            Err(e) => match e.downcast_ref::<Skipped>() {
                Some(Skipped(why)) => Verdict::Skipped(why.clone()),
                None => Verdict::Fail(format!("{e:#}")),
            },
        };
        Row {
            name: o.name.to_string(),
            took: o.took,
            verdict,
            not_checked: o.not_checked,
        }
    }
}

impl Row {
    /// The cleanup's row: its result and what it could not check.
    pub fn cleanup(took: Duration, result: anyhow::Result<Vec<String>>) -> Row {
        let (verdict, not_checked) = match result {
            Ok(n) if n.is_empty() => (Verdict::Pass, n),
            Ok(n) => (Verdict::PassPartly, n),
            Err(e) => (Verdict::Fail(format!("{e:#}")), Vec::new()),
        };
        Row {
            name: CLEANUP.into(),
            took,
            verdict,
            not_checked,
        }
    }

    /// The result column.
    pub fn result(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass => "pass",
            Verdict::PassPartly => "pass, partly",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skipped(_) => "skipped",
        }
    }

    /// The notes column: why skipped, or what was not checked.
    pub fn notes(&self) -> String {
        let mut notes = Vec::new();
        if let Verdict::Skipped(why) = &self.verdict {
            notes.push(why.clone());
        }
        if !self.not_checked.is_empty() {
            notes.push(format!("not checked: {}", self.not_checked.join("; ")));
        }
        // A `|` would end the cell.
        notes.join("; ").replace('|', "/")
    }
}

impl Report {
    /// The Markdown table: case, result, seconds, notes.
    pub fn table(&self) -> String {
        let mut table = String::from("\n| case | result | seconds | notes |\n|---|---|---:|---|\n");
        for r in &self.rows {
            table.push_str(&format!(
                "| {} | {} | {:.1} | {} |\n",
                r.name,
                r.result(),
                r.took.as_secs_f64(),
                r.notes()
            ));
        }
        table
    }

    /// `name: error` of every failed row.
    pub fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Fail(e) => Some(format!("{}: {e}", r.name)),
                _ => None,
            })
            .collect()
    }

    /// The row of `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// The mode, as the summary line says it.
pub fn describe_mode(suite: &Suite) -> String {
    match suite.mode {
        Mode::InProcess => format!("in-process, node {}", suite.node),
        Mode::External { remote: true } => format!("external, node {}", suite.node),
        Mode::External { remote: false } => format!(
            "external, node {}, local side only: no remote kubeconfig",
            suite.node
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: anyhow::Result<()>, not_checked: &[&str]) -> Outcome {
        Outcome {
            name: "c",
            took: Duration::from_millis(1500),
            result,
            not_checked: not_checked.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(Row::from(outcome(Ok(()), &[])).verdict, Verdict::Pass);
        let partly = Row::from(outcome(Ok(()), &["the remote pod is gone"]));
        assert_eq!(partly.verdict, Verdict::PassPartly);
        assert_eq!(partly.result(), "pass, partly");
        assert_eq!(partly.notes(), "not checked: the remote pod is gone");
        let skipped = Row::from(outcome(Err(Skipped("needs x | y".into()).into()), &[]));
        assert_eq!(skipped.verdict, Verdict::Skipped("needs x | y".into()));
        assert_eq!(skipped.notes(), "needs x / y");
        // A Skipped wrapped in context is still a skip.
        let wrapped: anyhow::Result<()> =
            Err(anyhow::Error::from(Skipped("why".into())).context("in the case"));
        assert_eq!(
            Row::from(outcome(wrapped, &[])).verdict,
            Verdict::Skipped("why".into())
        );
        let failed = Row::from(outcome(Err(anyhow::anyhow!("got 1, expected 2")), &["x"]));
        assert_eq!(failed.verdict, Verdict::Fail("got 1, expected 2".into()));
        assert_eq!(failed.result(), "FAIL");
    }

    #[test]
    fn table_and_failures() {
        let report = Report {
            rows: vec![
                Row::from(outcome(Ok(()), &[])),
                Row::from(outcome(Err(anyhow::anyhow!("boom")), &[])),
            ],
            summary: String::new(),
        };
        let table = report.table();
        assert!(table.contains("| c | pass | 1.5 |  |\n"), "{table}");
        assert!(table.contains("| c | FAIL | 1.5 |  |\n"), "{table}");
        assert_eq!(report.failures(), vec!["c: boom".to_string()]);
    }
}
