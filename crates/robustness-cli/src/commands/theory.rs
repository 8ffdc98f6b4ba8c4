//! `robustness theory`: every closed form of the paper's Section 4 against its numeric
//! counterpart, as tables (or JSON), plus Figure 4 as a PNG.

use crate::cli::TheoryArgs;
use crate::commands::print_json;
use anyhow::{Context, Result, bail};
use robustness::theory::{self, TheoryConfig};
use robustness::train::checkpoint::write_atomic;

pub fn run(args: TheoryArgs) -> Result<()> {
    let config = TheoryConfig {
        dim: args.dim,
        eps: args.eps.clone(),
        seed: args.seed,
        samples: args.samples.clone(),
    };
    let report = theory::run(&config).context("running the theory checks")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let figure = args.out.join("figure4.png");
    theory::figure4(&figure).context("drawing Figure 4")?;
    let markdown = report.to_markdown();
    write_atomic(&args.out.join("report.md"), markdown.as_bytes())?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("figure".into(), serde_json::json!(figure));
            obj.insert("all_pass".into(), serde_json::json!(report.all_pass()));
        }
        print_json(&value)?;
    } else {
        outln!("{markdown}");
        outln!("Figure 4: {}", figure.display());
    }
    if !report.all_pass() {
        bail!("some theory checks failed (see the tables)");
    }
    Ok(())
}
