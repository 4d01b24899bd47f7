//! `braid watch RUN`: a bar per step and one per running task (its progress and ETA),
//! redrawn until the run ends; then the run's summary, as `braid show RUN` prints it.
//! Bars draw on stderr when it is a terminal; elsewhere a line per change of a step's
//! counts goes to stderr instead.

use std::collections::HashMap;
use std::time::Duration;

use braid_client::{Client, Object, Pathspec, Run, RunStatus, Step, StepName, TaskId, TaskStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::{Error, Result};
use super::output::{self, Out};
use super::show::{details_text, progress_text, show_run};

/// Running tasks shown with a bar of their own at once.
const TASK_BARS: usize = 8;

pub fn watch(client: &Client, out: &Out, spec: &Pathspec, interval: Duration) -> Result<()> {
    let mut run = match client.resolve(spec)? {
        Object::Flow(f) => f.latest_run()?,
        Object::Run(r) => r,
        _ => {
            return Err(Error::Usage(format!(
                "watch follows a run: give flow/run (the run may be `latest`) or a flow, not {spec}"
            )));
        }
    };
    let bars = !out.json && out.stderr_tty;
    let mut view = View::new(bars);
    loop {
        // Status first: when it says the run ended, the steps read after it are final.
        let finished = run.is_finished();
        let steps = run.steps()?;
        view.update(&run, &steps)?;
        if finished {
            break;
        }
        std::thread::sleep(interval);
        run = run.refresh()?;
    }
    view.finish();
    show_run(out, &run)?;
    if run.status() == RunStatus::Succeeded {
        Ok(())
    } else {
        Err(Error::RunNotSucceeded { run: run.pathspec(), status: run.status(), error: run.error().map(str::to_owned) })
    }
}

struct View {
    bars: bool,
    multi: MultiProgress,
    header: ProgressBar,
    steps: Vec<(StepName, ProgressBar)>,
    /// Expected task count of a foreach step (its items), found once per step.
    expected: HashMap<StepName, Option<u64>>,
    tasks: HashMap<TaskId, ProgressBar>,
    /// Per step, the counts last reported as a line (when not drawing bars).
    reported: HashMap<StepName, String>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("█▉▊▋▌▍▎▏ ")
}

impl View {
    fn new(bars: bool) -> Self {
        let target = if bars { ProgressDrawTarget::stderr_with_hz(8) } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let header = multi.add(ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()));
        header.set_style(
            ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        View {
            bars,
            multi,
            header,
            steps: Vec::new(),
            expected: HashMap::new(),
            tasks: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    fn update(&mut self, run: &Run, steps: &[Step]) -> Result<()> {
        self.header.set_message(format!(
            "{}  {}  {}",
            run.pathspec(),
            run.status(),
            output::duration_opt(run.duration())
        ));
        self.header.tick();
        let width = steps.iter().map(|s| s.name().as_str().len()).max().unwrap_or(4);
        for step in steps {
            let total = step.task_count();
            let expected = self.expected_len(step)?;
            let len = expected.map_or(total, |e| e.max(total));
            let ended = total - step.count(TaskStatus::Pending) - step.count(TaskStatus::Running);
            let failed =
                step.count(TaskStatus::Failed) + step.count(TaskStatus::Lost) + step.count(TaskStatus::Cancelled);
            let mut msg = format!("{} running", step.count(TaskStatus::Running));
            if failed > 0 {
                msg.push_str(&format!(", {failed} failed"));
            }
            msg.push_str(&format!("  {}", output::duration_opt(step.duration())));
            let bar = self.step_bar(step.name(), width);
            bar.set_length(len.max(1));
            bar.set_position(ended);
            bar.set_message(msg.clone());
            if !self.bars {
                let line = format!("{}: {ended}/{len} done, {msg}", step.name());
                let key = format!("{ended}/{len} {failed}");
                if self.reported.get(step.name()) != Some(&key) {
                    self.reported.insert(step.name().clone(), key);
                    eprintln!("{line}");
                }
            }
        }
        if self.bars {
            self.update_tasks(steps)?;
            // Updates come in a burst the draw rate limit would partly drop: draw every
            // bar once now.
            self.header.force_draw();
            for (_, b) in &self.steps {
                b.force_draw();
            }
            for b in self.tasks.values() {
                b.force_draw();
            }
        }
        Ok(())
    }

    fn step_bar(&mut self, name: &StepName, width: usize) -> ProgressBar {
        if let Some((_, b)) = self.steps.iter().find(|(n, _)| n == name) {
            return b.clone();
        }
        // Added to the multi-bar before anything is set, so nothing draws on its own.
        let hidden = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::hidden());
        let bar = match self.steps.last() {
            Some((_, last)) => self.multi.insert_after(last, hidden),
            None => self.multi.insert_after(&self.header, hidden),
        };
        bar.set_style(style(&format!("{{prefix:>{width}.bold}} [{{bar:30.green/blue}}] {{pos}}/{{len}} {{msg}}")));
        bar.set_prefix(name.to_string());
        self.steps.push((name.clone(), bar.clone()));
        bar
    }

    fn expected_len(&mut self, step: &Step) -> Result<Option<u64>> {
        if let Some(e) = self.expected.get(step.name()) {
            return Ok(*e);
        }
        let first = step.tasks_by_index(0)?;
        let e = first.first().and_then(|t| t.foreach_stack().last()).map(|f| f.len);
        self.expected.insert(step.name().clone(), e);
        Ok(e)
    }

    fn update_tasks(&mut self, steps: &[Step]) -> Result<()> {
        let mut running = Vec::new();
        for s in steps.iter().filter(|s| s.count(TaskStatus::Running) > 0) {
            running.extend(s.tasks_with_status(TaskStatus::Running)?);
            if running.len() >= TASK_BARS {
                break;
            }
        }
        running.truncate(TASK_BARS);
        let live: Vec<TaskId> = running.iter().map(|t| t.id()).collect();
        self.tasks.retain(|id, bar| {
            let keep = live.contains(id);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for t in &running {
            let bar = match self.tasks.get(&t.id()) {
                Some(b) => b.clone(),
                None => {
                    let b = self.multi.add(ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden()));
                    b.set_style(style("  {prefix} [{bar:20.cyan/blue}] {msg}"));
                    let index = t.index().map(|i| format!("[{i}]")).unwrap_or_default();
                    b.set_prefix(format!("{}{index} task {}", t.step_name(), t.id()));
                    self.tasks.insert(t.id(), b.clone());
                    b
                }
            };
            let pct = t.progress().map_or(0.0, |p| p.percent);
            bar.set_position(pct.clamp(0.0, 100.0).round() as u64);
            let mut msg =
                progress_text(t).unwrap_or_else(|| format!("running for {}", output::duration_opt(t.duration())));
            if let Some(d) = details_text(t) {
                msg.push_str(&format!(" {}", output::cut(&d, 60)));
            }
            bar.set_message(msg);
        }
        Ok(())
    }

    fn finish(&mut self) {
        for (_, b) in self.tasks.drain() {
            b.finish_and_clear();
        }
        for (_, b) in &self.steps {
            b.finish();
        }
        self.header.finish_and_clear();
        let _ = self.multi.clear();
    }
}
