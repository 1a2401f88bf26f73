//! Generates the plate checkpoint clip: GA 36 plates painted onto real vehicle photos driven
//! across real video frames, as H.264, with its ground truth and a matching registry.
//!
//! `plategen --out .cache/media/plates --name checkpoint --vehicles 60 --seed 7`

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Parser;
use edge_node::plategen::{generate, GenConfig, PlateFont};

#[derive(Parser)]
#[command(version)]
struct Args {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Base name of the files written (`<name>.mp4`, `.truth.json`, `.registry.json`).
    #[arg(long, default_value = "checkpoint")]
    name: String,
    /// Vehicles in the clip.
    #[arg(long, default_value_t = 60)]
    vehicles: usize,
    /// Random seed: the same seed gives the same clip.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Folder with bus.jpg, dog.jpg and vtest.avi (TRAFFIC_MEDIA_DIR, default .cache/media).
    #[arg(long)]
    media: Option<PathBuf>,
    /// CJK font (TRAFFIC_CJK_FONT, default WenQuanYi Micro Hei from fonts-wqy-microhei).
    #[arg(long)]
    font: Option<PathBuf>,
    /// The first eight vehicles carry one of each registry case (wanted, coach, fake,
    /// mismatch, unregistered, hazardous, scrapped), so a short clip shows every anomaly.
    #[arg(long)]
    scripted: bool,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let media = a
        .media
        .or_else(|| std::env::var_os("TRAFFIC_MEDIA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".cache/media"));
    let mut cfg = GenConfig::new(a.vehicles, a.seed, media);
    cfg.font = a.font.unwrap_or_else(PlateFont::default_path);
    cfg.scripted = a.scripted;
    let started = std::time::Instant::now();
    let mut last_pct = u64::MAX;
    // A terminal gets one line rewritten in place; a log gets a line every 10 %.
    let tty = std::io::stderr().is_terminal();
    let step = if tty { 1 } else { 10 };
    let result = generate(&cfg, &a.out, &a.name, |done, total| {
        let pct = done * 100 / total.max(1);
        if pct != last_pct && (pct % step == 0 || done == total) {
            last_pct = pct;
            if tty {
                eprint!("\rplategen: frame {done}/{total} ({pct}%)");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("plategen: frame {done}/{total} ({pct}%)");
            }
        }
    });
    if tty {
        eprintln!();
    }
    match result {
        Ok(truth) => {
            let invalid = truth.vehicles.iter().filter(|v| !v.valid).count();
            println!(
                "wrote {}/{}.mp4 ({} frames, {} vehicles, {} with invalid plates) in {:.1} s",
                a.out.display(),
                a.name,
                truth.frames,
                truth.vehicles.len(),
                invalid,
                started.elapsed().as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plategen: error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
