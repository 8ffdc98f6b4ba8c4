//! Training progress: an indicatif bar with rate, ETA and running loss/accuracy on a terminal;
//! one line per epoch on stderr otherwise (stdout stays free for `--json`).

use indicatif::{ProgressBar, ProgressStyle};
use robustness::train::TrainObserver;
use robustness::train::metrics::EpochMetrics;
use std::io::IsTerminal;

pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    batches: usize,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            bar: None,
            epochs: 0,
            batches: 0,
        }
    }
}

impl TrainObserver for Progress {
    fn on_start(&mut self, start_epoch: usize, epochs: usize, batches: usize) {
        self.epochs = epochs;
        self.batches = batches;
        if start_epoch > 0 {
            eprintln!("resuming after epoch {start_epoch} of {epochs}");
        }
        if std::io::stderr().is_terminal() {
            let total = (epochs.saturating_sub(start_epoch) * batches) as u64;
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} batches {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            self.bar = Some(bar);
        }
    }

    fn on_batch(&mut self, epoch: usize, _batch: usize, loss: f64, accuracy: f64) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
            bar.set_message(format!("loss {loss:.4} acc {:.2}%", 100.0 * accuracy));
            bar.inc(1);
        }
    }

    fn on_epoch(&mut self, m: &EpochMetrics) {
        // With --ema, the test accuracy is the average's; the optimizer's weights' follows.
        let raw = m
            .raw_test_accuracy
            .map(|a| format!(" (EMA; weights {:.2}%)", 100.0 * a))
            .unwrap_or_default();
        let line = format!(
            "epoch {}/{}: train loss {:.4}, train acc {:.2}%, test acc {:.2}%{raw}, lr {:.4}, {:.1}s",
            m.epoch,
            self.epochs,
            m.train_loss,
            100.0 * m.train_accuracy,
            100.0 * m.test_accuracy,
            m.lr,
            m.seconds
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Progress over examples (constructions, evaluations): a bar with rate and ETA on a terminal,
/// otherwise a line on stderr at every tenth of the work.
pub struct Examples {
    bar: Option<ProgressBar>,
    what: String,
    last_tenth: usize,
}

impl Examples {
    pub fn new(what: &str) -> Self {
        Self {
            bar: None,
            what: what.to_string(),
            last_tenth: usize::MAX,
        }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(total as u64);
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} examples {per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(self.what.clone());
                bar.reset_eta();
                bar
            });
            bar.set_position(done as u64);
        } else {
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if tenth != self.last_tenth {
                self.last_tenth = tenth;
                eprintln!("{}: {done}/{total} examples", self.what);
            }
        }
    }
}

impl Drop for Examples {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
