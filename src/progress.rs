//! Progress of long work on stderr: a spinner per role on a terminal, plain
//! lines (one per step) everywhere else, such as CI logs.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the progress display is told.
pub trait Progress: Send + Sync {
    /// The role's build reached a new step.
    fn step(&self, role: &str, message: &str);
}

/// The display for a set of roles.
pub struct Display {
    bars: Option<(MultiProgress, Mutex<BTreeMap<String, ProgressBar>>)>,
}

impl Display {
    /// Spinners when stderr is a terminal and `quiet` is off, else lines.
    pub fn new(quiet: bool) -> Display {
        let bars = (std::io::stderr().is_terminal() && !quiet).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(BTreeMap::new()),
            )
        });
        Display { bars }
    }

    /// Stops every spinner, leaving its last line.
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            if let Ok(bars) = bars.lock() {
                for b in bars.values() {
                    b.finish();
                }
            }
        }
    }
}

impl Progress for Display {
    fn step(&self, role: &str, message: &str) {
        match &self.bars {
            Some((multi, bars)) => {
                let Ok(mut bars) = bars.lock() else { return };
                let bar = bars.entry(role.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {prefix:<12} {elapsed:>4} {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.set_prefix(role.to_string());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                bar.set_message(message.to_string());
            }
            None => tracing::info!("{role}: {message}"),
        }
    }
}
