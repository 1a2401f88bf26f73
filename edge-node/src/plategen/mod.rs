//! The plate checkpoint generator: GA 36 plates rendered with a CJK font, painted with a
//! perspective warp onto real vehicle photos (the minibus of Ultralytics' `bus.jpg`, the
//! pickup of darknet's `dog.jpg`), driven across real video frames (`vtest.avi`) in two
//! lanes with perspective growth and motion blur, encoded to H.264 with GStreamer. The ground
//! truth (plate, class, colour, validity, lane, direction, frames) and a matching vehicle
//! registry are written beside the video.

pub mod render;
pub mod scene;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use protocol::plate::{self, Mode, PlateClass, PlateColor, PROVINCES};
use serde::{Deserialize, Serialize};

pub use render::{PlateFont, PlateStyle};

/// A small deterministic generator (splitmix64): the same seed gives the same clip.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in a..b.
    pub fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const SERIAL: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
const STRICT_SHAPES: [&str; 10] = [
    "DDDDD", "LDDDD", "LLDDD", "DLDDD", "DDLDD", "DDDLD", "DDDDL", "LDDDL", "DDDLL", "LDLDD",
];

fn province(rng: &mut Rng) -> char {
    let p: Vec<char> = PROVINCES.chars().collect();
    p[rng.below(p.len())]
}

fn digit(rng: &mut Rng) -> char {
    (b'0' + rng.below(10) as u8) as char
}

fn letter(rng: &mut Rng) -> char {
    LETTERS[rng.below(LETTERS.len())] as char
}

/// A random ordinary plate text `P A S{5}` following a strict serial pattern.
pub fn ordinary_plate(rng: &mut Rng) -> String {
    let shape = rng.pick(&STRICT_SHAPES);
    let mut s = String::new();
    s.push(province(rng));
    s.push(letter(rng));
    for c in shape.chars() {
        s.push(if c == 'D' { digit(rng) } else { letter(rng) });
    }
    s
}

/// A random small new-energy plate `P A [DF] S D{4}`.
pub fn new_energy_plate(rng: &mut Rng) -> String {
    let mut s = String::new();
    s.push(province(rng));
    s.push(letter(rng));
    s.push(if rng.below(2) == 0 { 'D' } else { 'F' });
    s.push(SERIAL[rng.below(SERIAL.len())] as char);
    for _ in 0..4 {
        s.push(digit(rng));
    }
    s
}

/// Changes whenever the generator draws a different clip, or writes a different ground
/// truth, from the same settings, so that clips cached by an older generator are made again.
pub const GENERATOR_VERSION: u32 = 2;

/// Plate texts that fit no GA 36 grammar in either mode (suspected fakes).
pub const INVALID_PLATES: [&str; 5] = ["中A12345", "苏E1234", "苏8E2345", "浙A123456", "沪A2345Z8"];

/// Which vehicle photo a pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleKind {
    /// The minibus of `bus.jpg` (the detector calls it a bus).
    Minibus,
    /// The pickup of `dog.jpg` (the detector calls it a truck or a car).
    Pickup,
}

/// What the registry the generator writes says about a plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryRole {
    /// Registered, nothing on record.
    Normal,
    /// Not in the registry.
    Unregistered,
    Wanted,
    Scrapped,
    /// A long-distance coach (K11, use B).
    Coach,
    /// Registered with the other colour (blue small car while the plate is yellow).
    Mismatch,
    /// A hazardous-goods tanker (H14, use R).
    Hazardous,
}

/// One vehicle of the clip, as the ground truth records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthVehicle {
    pub index: usize,
    pub plate: String,
    pub style: PlateStyle,
    /// GA 36 class when the text fits a grammar.
    pub plate_class: Option<PlateClass>,
    pub plate_colour: PlateColor,
    /// Whether the text fits a GA 36 grammar (lenient mode).
    pub valid: bool,
    pub vehicle: VehicleKind,
    pub registry: RegistryRole,
    pub lane: u32,
    /// `eastbound` (left to right, lane 1) or `westbound` (right to left, lane 2).
    pub direction: String,
    /// First and last frame with any of the vehicle in view.
    pub first_frame: u64,
    pub last_frame: u64,
    /// Plate width on screen (pixels) at its widest.
    pub max_plate_width_px: f32,
    /// Width of the horizontal motion blur drawn over the vehicle (pixels of the sprite
    /// before it is scaled into the frame); 0 in files from before it was recorded.
    #[serde(default)]
    pub motion_blur_px: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    pub video: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u64,
    pub seed: u64,
    pub vehicles: Vec<TruthVehicle>,
}

impl Truth {
    pub fn load(path: &Path) -> Result<Truth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read ground truth '{}': {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("ground truth '{}' is not valid: {e}", path.display()))
    }
}

#[derive(Debug, Clone)]
pub struct GenConfig {
    pub vehicles: usize,
    pub seed: u64,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    /// Share of invalid (fake) plates.
    pub invalid_share: f32,
    pub media_dir: PathBuf,
    pub font: PathBuf,
    /// The first vehicles follow [`SCRIPT`], so that a short clip holds every anomaly.
    pub scripted: bool,
}

/// Plate style (None: an invalid plate), registry role and lane of the first vehicles of a
/// scripted clip.
pub const SCRIPT: [(Option<PlateStyle>, RegistryRole, u32); 8] = [
    (Some(PlateStyle::Blue), RegistryRole::Wanted, 1),
    (Some(PlateStyle::YellowTwoRow), RegistryRole::Coach, 2),
    (None, RegistryRole::Unregistered, 1),
    (Some(PlateStyle::Yellow), RegistryRole::Mismatch, 2),
    (Some(PlateStyle::Green), RegistryRole::Unregistered, 1),
    (Some(PlateStyle::Yellow), RegistryRole::Hazardous, 2),
    (Some(PlateStyle::Blue), RegistryRole::Scrapped, 2),
    (Some(PlateStyle::Green), RegistryRole::Normal, 1),
];

impl GenConfig {
    pub fn new(vehicles: usize, seed: u64, media_dir: PathBuf) -> GenConfig {
        GenConfig {
            vehicles,
            seed,
            fps: 10,
            width: 1280,
            height: 720,
            invalid_share: 0.08,
            media_dir,
            font: PlateFont::default_path(),
            scripted: false,
        }
    }
}

/// Frames a vehicle takes to cross the frame.
pub const PASS_FRAMES: u64 = 30;
/// Frames between a vehicle leaving and one of the other lane entering (the other lane's
/// vehicle enters where the last one left).
pub const LANE_SWITCH_GAP: u64 = 12;

/// Plans the vehicles of a clip: plate texts and styles, registry roles, lanes and timing.
pub fn plan(cfg: &GenConfig) -> Vec<TruthVehicle> {
    let mut rng = Rng::new(cfg.seed);
    let mut out = Vec::new();
    let mut lane_free = [0u64; 2];
    let mut next_start = 2u64;
    for index in 0..cfg.vehicles {
        // Styles: mostly blue; yellow (one and two rows) and green in good numbers.
        let roll = rng.range(0.0, 1.0);
        let script = SCRIPT.get(index).filter(|_| cfg.scripted);
        let (text, style) = if let Some((style, _, _)) = script {
            match style {
                None => (
                    INVALID_PLATES[index % INVALID_PLATES.len()].to_string(),
                    PlateStyle::Blue,
                ),
                Some(PlateStyle::Green) => (new_energy_plate(&mut rng), PlateStyle::Green),
                Some(st) => (ordinary_plate(&mut rng), *st),
            }
        } else if roll < cfg.invalid_share {
            (
                INVALID_PLATES[index % INVALID_PLATES.len()].to_string(),
                PlateStyle::Blue,
            )
        } else {
            match rng.below(10) {
                0..=3 => (ordinary_plate(&mut rng), PlateStyle::Blue),
                4..=5 => (ordinary_plate(&mut rng), PlateStyle::Yellow),
                6..=7 => (ordinary_plate(&mut rng), PlateStyle::YellowTwoRow),
                _ => (new_energy_plate(&mut rng), PlateStyle::Green),
            }
        };
        // Large vehicles carry yellow plates; small cars and light trucks blue or green ones.
        let vehicle = match style {
            PlateStyle::Yellow | PlateStyle::YellowTwoRow => VehicleKind::Minibus,
            _ => VehicleKind::Pickup,
        };
        let colour = match style {
            PlateStyle::Blue => PlateColor::Blue,
            PlateStyle::Yellow | PlateStyle::YellowTwoRow => PlateColor::Yellow,
            PlateStyle::Green => PlateColor::Green,
            PlateStyle::White => PlateColor::White,
        };
        let parsed = plate::parse(&text, Some(colour), Mode::Lenient).ok();
        let registry = if let Some((_, role, _)) = script {
            *role
        } else if parsed.is_none() {
            RegistryRole::Unregistered
        } else {
            match rng.below(20) {
                0 => RegistryRole::Unregistered,
                1 => RegistryRole::Wanted,
                2 => RegistryRole::Scrapped,
                3 if colour == PlateColor::Yellow => RegistryRole::Coach,
                4 if colour == PlateColor::Yellow => RegistryRole::Mismatch,
                5 if colour == PlateColor::Yellow => RegistryRole::Hazardous,
                _ => RegistryRole::Normal,
            }
        };
        // Large vehicles keep to the near (right-hand) lane, as Chinese roads require.
        let lane = match script {
            Some((_, _, lane)) => *lane,
            None if vehicle == VehicleKind::Minibus => 2,
            None => 1 + rng.below(2) as u32,
        };
        let li = lane as usize - 1;
        // The camera looks across the road: a vehicle in the near lane would hide one in the
        // far lane (a checkpoint camera on a gantry sees lanes side by side). Vehicles of
        // the two lanes take turns; vehicles of one lane follow each other closely.
        let other_lane_clear = out
            .iter()
            .filter(|o: &&TruthVehicle| o.lane != lane)
            .map(|o| o.last_frame + LANE_SWITCH_GAP)
            .max()
            .unwrap_or(0);
        let start = next_start.max(lane_free[li]).max(other_lane_clear);
        lane_free[li] = start + PASS_FRAMES * 2 / 3;
        next_start = start + 8 + rng.below(10) as u64;
        out.push(TruthVehicle {
            index,
            plate: text,
            style,
            plate_class: parsed.as_ref().map(|p| p.class),
            plate_colour: colour,
            valid: parsed.is_some(),
            vehicle,
            registry,
            lane,
            direction: if lane == 1 { "eastbound" } else { "westbound" }.to_string(),
            first_frame: start,
            last_frame: start + PASS_FRAMES - 1,
            max_plate_width_px: 0.0,
            motion_blur_px: 0,
        });
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error(transparent)]
    Font(#[from] render::FontError),
    #[error("{0}")]
    Media(String),
    #[error("video encoding failed: {0}; scripts/setup.sh installs the GStreamer x264 encoder (gstreamer1.0-plugins-ugly)")]
    Encode(String),
    #[error("cannot write '{path}': {err}")]
    Write { path: PathBuf, err: std::io::Error },
}

/// Writes `<out>/<name>.mp4`, `<name>.truth.json` and `<name>.registry.json`; returns the truth.
pub fn generate(
    cfg: &GenConfig,
    out_dir: &Path,
    name: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<Truth, GenError> {
    std::fs::create_dir_all(out_dir).map_err(|err| GenError::Write {
        path: out_dir.to_path_buf(),
        err,
    })?;
    let font = PlateFont::load(&cfg.font)?;
    let mut vehicles = plan(cfg);
    let mut scene = scene::Scene::new(cfg, &font, &vehicles)?;
    let frames = vehicles.iter().map(|v| v.last_frame + 1).max().unwrap_or(0) + 5;
    let video = out_dir.join(format!("{name}.mp4"));
    let mut writer = scene::VideoWriter::create(&video, cfg.width, cfg.height, cfg.fps)?;
    for f in 0..frames {
        let img = scene.frame(f, &mut vehicles)?;
        writer.push(&img, f)?;
        progress(f + 1, frames);
    }
    writer.finish()?;
    let truth = Truth {
        video: format!("{name}.mp4"),
        width: cfg.width,
        height: cfg.height,
        fps: cfg.fps,
        frames,
        seed: cfg.seed,
        vehicles,
    };
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|err| GenError::Write { path, err })
    };
    write(
        out_dir.join(format!("{name}.truth.json")),
        serde_json::to_string_pretty(&truth).expect("serialisable"),
    )?;
    write(
        out_dir.join(format!("{name}.registry.json")),
        serde_json::to_string_pretty(&registry_for(&truth)).expect("serialisable"),
    )?;
    Ok(truth)
}

/// The vehicle registry matching a clip: every plate but the unregistered ones, with the
/// statuses the plan gave them.
pub fn registry_for(truth: &Truth) -> crate::registry::RegistryFile {
    use crate::registry::{RegistryFile, Status, VehicleRecord};
    let mut vehicles = Vec::new();
    for v in &truth.vehicles {
        let (class, colour) = match (v.plate_class, v.registry) {
            (None, _) | (_, RegistryRole::Unregistered) => continue,
            (Some(_), RegistryRole::Mismatch) => (PlateClass::SmallCar, PlateColor::Blue),
            (Some(c), _) => (c, v.plate_colour),
        };
        let (vehicle_class, use_character) = match v.registry {
            RegistryRole::Coach => ("K11", "B"),
            RegistryRole::Hazardous => ("H14", "R"),
            _ if v.plate_colour == PlateColor::Yellow => ("K21", "A"),
            _ => ("K33", "A"),
        };
        let status = match v.registry {
            RegistryRole::Wanted => vec![Status::Wanted],
            RegistryRole::Scrapped => vec![Status::Scrapped],
            _ => vec![],
        };
        vehicles.push(VehicleRecord {
            plate: plate::parse(&v.plate, Some(v.plate_colour), Mode::Lenient)
                .map(|p| p.text)
                .unwrap_or_else(|_| v.plate.clone()),
            plate_class: Some(class),
            plate_colour: Some(colour),
            vehicle_class: Some(vehicle_class.to_string()),
            use_character: Some(use_character.to_string()),
            status,
            short_route: false,
        });
    }
    RegistryFile {
        version: 1,
        issued_by: "plategen".to_string(),
        vehicles,
    }
}

/// One truth vehicle and the pass the node reported for it.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub vehicle: TruthVehicle,
    /// Index into the passes given, when one matched.
    pub pass: Option<usize>,
    /// What the node read (None: unread or no pass).
    pub read: Option<String>,
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub vehicles: Vec<Scored>,
    /// Passes that matched no vehicle of the clip.
    pub unmatched_passes: Vec<usize>,
    /// Vehicles with more than one pass.
    pub duplicated: Vec<usize>,
}

impl Score {
    pub fn exact(&self) -> usize {
        self.vehicles.iter().filter(|s| s.exact).count()
    }
    pub fn rate(&self) -> f64 {
        self.exact() as f64 / self.vehicles.len().max(1) as f64
    }
    /// Characters read right, position by position, over every vehicle (a read of the wrong
    /// length, or none, counts none of its characters): (right, total).
    pub fn characters(&self) -> (usize, usize) {
        let mut right = 0;
        let mut total = 0;
        for s in &self.vehicles {
            let want: Vec<char> = expected_text(&s.vehicle).chars().collect();
            total += want.len();
            if let Some(read) = &s.read {
                let got: Vec<char> = read.chars().collect();
                if got.len() == want.len() {
                    right += got.iter().zip(&want).filter(|(a, b)| a == b).count();
                }
            }
        }
        (right, total)
    }

    /// Misses whose read differs from the plate in the province alone.
    pub fn province_only_misses(&self) -> usize {
        self.vehicles
            .iter()
            .filter(|s| !s.exact)
            .filter(|s| {
                let want: Vec<char> = expected_text(&s.vehicle).chars().collect();
                s.read.as_ref().is_some_and(|r| {
                    let got: Vec<char> = r.chars().collect();
                    got.len() == want.len() && got[0] != want[0] && got[1..] == want[1..]
                })
            })
            .count()
    }

    /// Exact reads per motion-blur width: (blur px, exact, total).
    pub fn by_blur(&self) -> Vec<(u32, usize, usize)> {
        let mut m: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
        for s in &self.vehicles {
            let e = m.entry(s.vehicle.motion_blur_px).or_default();
            e.0 += s.exact as usize;
            e.1 += 1;
        }
        m.into_iter().map(|(b, (e, t))| (b, e, t)).collect()
    }

    /// Exact reads per plate style: (style, exact, total).
    pub fn by_style(&self) -> Vec<(String, usize, usize)> {
        let mut m: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for s in &self.vehicles {
            let key = if s.vehicle.valid {
                serde_json::to_value(s.vehicle.style)
                    .expect("serialisable")
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            } else {
                "invalid".to_string()
            };
            let e = m.entry(key).or_default();
            e.1 += 1;
            if s.exact {
                e.0 += 1;
            }
        }
        m.into_iter().map(|(k, (a, b))| (k, a, b)).collect()
    }
}

/// What the node should report for a truth vehicle: the normalised text of a valid plate,
/// the text as painted otherwise.
pub fn expected_text(v: &TruthVehicle) -> String {
    plate::parse(&v.plate, Some(v.plate_colour), Mode::Lenient)
        .map(|p| p.text)
        .unwrap_or_else(|_| v.plate.clone())
}

/// Matches `vehicle_pass` events to the clip's vehicles: a pass goes to the vehicle of its
/// direction whose frames its time span overlaps most. `start_ms` is the clip's first frame
/// time.
pub fn score(truth: &Truth, passes: &[protocol::Event], start_ms: i64) -> Score {
    let frame = |t: i64| (t - start_ms) * truth.fps as i64 / 1000;
    let mut by_vehicle: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut unmatched = Vec::new();
    for (i, p) in passes.iter().enumerate() {
        let protocol::EventBody::VehiclePass(vp) = &p.body else {
            continue;
        };
        let (a, b) = (
            frame(vp.first_seen_ms.unwrap_or(p.frame_time_ms)),
            frame(vp.last_seen_ms.unwrap_or(p.frame_time_ms)),
        );
        let best = truth
            .vehicles
            .iter()
            .filter(|v| Some(&v.direction) == vp.direction.as_ref())
            .map(|v| {
                (
                    v.index,
                    (b.min(v.last_frame as i64) - a.max(v.first_frame as i64) + 1).max(0),
                )
            })
            .max_by_key(|(_, o)| *o);
        match best {
            Some((v, o)) if o > 0 => by_vehicle.entry(v).or_default().push(i),
            _ => unmatched.push(i),
        }
    }
    let mut duplicated = Vec::new();
    let vehicles = truth
        .vehicles
        .iter()
        .map(|v| {
            let list = by_vehicle.get(&v.index).cloned().unwrap_or_default();
            if list.len() > 1 {
                duplicated.push(v.index);
            }
            // Of several passes for one vehicle, the one that read a plate counts.
            let pass = list.iter().copied().max_by_key(|&i| match &passes[i].body {
                protocol::EventBody::VehiclePass(vp) => vp.plate_reads,
                _ => 0,
            });
            let read = pass.and_then(|i| match &passes[i].body {
                protocol::EventBody::VehiclePass(vp) => vp.plate.clone(),
                _ => None,
            });
            Scored {
                exact: read.as_deref() == Some(expected_text(v).as_str()),
                vehicle: v.clone(),
                pass,
                read,
            }
        })
        .collect();
    Score {
        vehicles,
        unmatched_passes: unmatched,
        duplicated,
    }
}
