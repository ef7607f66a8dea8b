//! The text rendering of a [`Report`] (what `snapdump inspect` prints without `--json`).

use std::fmt::Write;

use crate::bytes::human_bytes;
use crate::model::{Frame, Report};

/// Which sections to print. With none of `threads`, `modules` and `memory` set, the summary
/// prints threads, modules and memory totals; with some set, only those (and `memory` adds
/// the region table). Stacks are printed whenever the report has them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sections {
    pub threads: bool,
    pub modules: bool,
    pub memory: bool,
}

impl Sections {
    fn all(self) -> bool {
        !(self.threads || self.modules || self.memory)
    }
}

/// Renders `report` as text.
pub fn render(report: &Report, sections: &Sections) -> String {
    let mut out = String::new();
    header(&mut out, report);
    if sections.all() || sections.threads {
        threads(&mut out, report);
    }
    if sections.all() || sections.modules {
        modules(&mut out, report);
    }
    if sections.all() || sections.memory {
        memory(&mut out, report, sections.memory);
    }
    if report.stacks.is_some() {
        stacks(&mut out, report);
    }
    problems(&mut out, report);
    out
}

fn header(out: &mut String, r: &Report) {
    let mut first = format!("{}, {}", r.format.describe(), r.arch);
    if let Some(c) = &r.compression {
        let _ = write!(first, ", {c}-compressed");
    }
    let _ = write!(first, ", {}", human_bytes(r.size));
    match r.writer {
        Some(w) => {
            let _ = write!(first, "; written by {}", w.name());
        }
        None => first.push_str("; writer unknown"),
    }
    if let Some(mode) = &r.mode {
        let source = if r.mode_recorded {
            "recorded by snapdump"
        } else {
            "inferred from the contents"
        };
        let _ = write!(first, "; mode {mode} ({source})");
    }
    let _ = writeln!(out, "{first}");
    let p = &r.process;
    let mut line = String::from("process");
    if let Some(pid) = p.pid {
        let _ = write!(line, " {pid}");
    }
    if let Some(name) = &p.name {
        let _ = write!(line, " {name}");
    }
    let mut extra = Vec::new();
    if let Some(ppid) = p.ppid {
        extra.push(format!("parent {ppid}"));
    }
    if let Some(uid) = p.uid {
        extra.push(format!("uid {uid}"));
    }
    if !extra.is_empty() {
        let _ = write!(line, " ({})", extra.join(", "));
    }
    let _ = writeln!(out, "{line}");
    let field = |out: &mut String, key: &str, value: &Option<String>| {
        if let Some(v) = value {
            let _ = writeln!(out, "  {key:<12}{v}");
        }
    };
    field(out, "executable", &p.executable);
    field(out, "command", &p.command_line);
    field(out, "dumped at", &p.dumped_at);
    let _ = writeln!(out, "  {:<12}{}", "reason", p.reason.description);
}

fn threads(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\nthreads ({})", r.threads.len());
    let _ = writeln!(
        out,
        "  {:>9}  {:<16} {:<18} {:<18} SIGNAL",
        "TID", "NAME", "IP", "SP"
    );
    for t in &r.threads {
        let signal = if t.crashed {
            r.process
                .reason
                .signal_name
                .clone()
                .unwrap_or_else(|| "crashed".into())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{} {:>9}  {:<16} {:#018x} {:#018x} {}",
            if t.crashed { '*' } else { ' ' },
            t.tid,
            t.name.as_deref().unwrap_or("-"),
            t.ip.0,
            t.sp.0,
            signal
        )
        .map(|_| ());
        trim_line_end(out);
    }
}

fn modules(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\nmodules ({})", r.modules.len());
    let _ = writeln!(
        out,
        "  {:<18} {:>10}  {:<40} PATH",
        "BASE", "SIZE", "BUILD ID"
    );
    for m in &r.modules {
        let _ = writeln!(
            out,
            "  {:#018x} {:>10}  {:<40} {}",
            m.base.0,
            human_bytes(m.size),
            m.build_id.as_deref().unwrap_or("-"),
            m.path
        );
    }
}

fn memory(out: &mut String, r: &Report, table: bool) {
    let m = &r.memory;
    let _ = writeln!(
        out,
        "\nmemory: {} regions ({} with contents, {} without), {} mapped, {} stored",
        m.regions,
        m.regions_with_contents,
        m.regions - m.regions_with_contents,
        human_bytes(m.mapped_bytes),
        human_bytes(m.stored_bytes)
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>8} {:>12} {:>12}",
        "KIND", "REGIONS", "MAPPED", "STORED"
    );
    for k in &m.by_kind {
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>12} {:>12}",
            k.kind.name(),
            k.regions,
            human_bytes(k.mapped_bytes),
            human_bytes(k.stored_bytes)
        );
    }
    if !table {
        return;
    }
    let _ = writeln!(
        out,
        "\n  {:<18} {:<18} {:<5} {:>11} {:>11}  {:<10} PATH",
        "START", "END", "PERMS", "SIZE", "STORED", "KIND"
    );
    for region in &r.regions {
        let _ = writeln!(
            out,
            "  {:#018x} {:#018x} {:<5} {:>11} {:>11}  {:<10} {}",
            region.start.0,
            region.end.0,
            region.perms,
            human_bytes(region.size),
            human_bytes(region.stored),
            region.kind.name(),
            region.path.as_deref().unwrap_or("")
        );
        trim_line_end(out);
    }
}

fn stacks(out: &mut String, r: &Report) {
    let Some(stacks) = &r.stacks else {
        return;
    };
    for stack in stacks {
        let thread = r.threads.iter().find(|t| t.tid == stack.tid);
        let name = thread.and_then(|t| t.name.as_deref()).unwrap_or("");
        let crashed = if thread.is_some_and(|t| t.crashed) {
            " (crashed)"
        } else {
            ""
        };
        let _ = writeln!(out, "\nthread {} {name}{crashed}", stack.tid);
        trim_line_end(out);
        for frame in &stack.frames {
            let _ = writeln!(out, "  {}", frame_line(frame));
        }
        if let Some(why) = &stack.incomplete {
            let _ = writeln!(out, "  (stack incomplete: {why})");
        }
    }
}

/// `#3  0x00007f…  in name at file:line (module +0x1234) [cfi]`.
pub fn frame_line(frame: &Frame) -> String {
    let mut line = format!("#{:<3} {:#018x}", frame.index, frame.address.0);
    match &frame.function {
        Some(f) => {
            let _ = write!(line, " in {f}");
        }
        None => line.push_str(" in ??"),
    }
    if let Some(innermost) = frame.inlined.first() {
        let _ = write!(line, " [inlined: {innermost}");
        if frame.inlined.len() > 1 {
            let _ = write!(line, " and {} more", frame.inlined.len() - 1);
        }
        line.push(']');
    }
    if let Some(file) = &frame.file {
        let _ = write!(line, " at {file}");
        if let Some(l) = frame.line {
            let _ = write!(line, ":{l}");
        }
    }
    if let (Some(module), Some(offset)) = (&frame.module, frame.module_offset) {
        let short = module.rsplit('/').next().unwrap_or(module);
        let _ = write!(line, " ({short} +{offset})");
    }
    let _ = write!(line, " [{}]", frame.trust);
    line
}

fn problems(out: &mut String, r: &Report) {
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings");
        for w in &r.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    if !r.errors.is_empty() {
        let _ = writeln!(out, "\nerrors: the dump is damaged");
        for e in &r.errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
}

fn trim_line_end(out: &mut String) {
    let body = out.trim_end_matches('\n').trim_end().len();
    out.truncate(body);
    out.push('\n');
}
