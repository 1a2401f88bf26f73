//! Zones: crosswalks and the waiting areas at their ends, as polygons in relative frame
//! coordinates (0..1) so that they survive a change of resolution.
//!
//! Pure geometry: point-in-polygon, simplicity, and which zone a foot point is in.

use protocol::BBox;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    Crosswalk,
    WaitingArea,
    /// One traffic lane; `lane` gives its number.
    Lane,
    /// An area closed to some vehicles during some hours (see `plates.restricted`).
    Restricted,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Name rules refer to, e.g. `crosswalk_east`.
    pub name: String,
    pub kind: ZoneKind,
    /// Corners in order, relative coordinates: [[x, y], ...] with 0..1 across the frame.
    pub polygon: Vec<[f32; 2]>,
    /// Lane number of a zone of kind `lane`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<u32>,
}

/// A polygon in relative coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon(pub Vec<(f32, f32)>);

impl Polygon {
    /// Even-odd ray casting; points on an edge may fall either way.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let p = &self.0;
        let mut inside = false;
        let mut j = p.len() - 1;
        for i in 0..p.len() {
            let (xi, yi) = p[i];
            let (xj, yj) = p[j];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }

    /// No two non-adjacent edges touch or cross.
    pub fn is_simple(&self) -> bool {
        let n = self.0.len();
        if n < 3 {
            return false;
        }
        for i in 0..n {
            let a = (self.0[i], self.0[(i + 1) % n]);
            for j in i + 1..n {
                if j == i || (j + 1) % n == i || (i + 1) % n == j {
                    continue;
                }
                let b = (self.0[j], self.0[(j + 1) % n]);
                if segments_intersect(a.0, a.1, b.0, b.1) {
                    return false;
                }
            }
        }
        self.area().abs() > 1e-9
    }

    pub fn area(&self) -> f32 {
        let n = self.0.len();
        (0..n)
            .map(|i| {
                let (x1, y1) = self.0[i];
                let (x2, y2) = self.0[(i + 1) % n];
                x1 * y2 - x2 * y1
            })
            .sum::<f32>()
            / 2.0
    }

    /// Corners in pixels of a `w` x `h` frame.
    pub fn to_pixels(&self, w: u32, h: u32) -> Vec<(f32, f32)> {
        self.0
            .iter()
            .map(|(x, y)| (x * w as f32, y * h as f32))
            .collect()
    }
}

fn orient(a: (f32, f32), b: (f32, f32), c: (f32, f32)) -> f32 {
    (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0)
}

fn on_segment(a: (f32, f32), b: (f32, f32), p: (f32, f32)) -> bool {
    p.0 >= a.0.min(b.0) && p.0 <= a.0.max(b.0) && p.1 >= a.1.min(b.1) && p.1 <= a.1.max(b.1)
}

fn segments_intersect(p1: (f32, f32), p2: (f32, f32), q1: (f32, f32), q2: (f32, f32)) -> bool {
    let d1 = orient(q1, q2, p1);
    let d2 = orient(q1, q2, p2);
    let d3 = orient(p1, p2, q1);
    let d4 = orient(p1, p2, q2);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on_segment(q1, q2, p1))
        || (d2 == 0.0 && on_segment(q1, q2, p2))
        || (d3 == 0.0 && on_segment(p1, p2, q1))
        || (d4 == 0.0 && on_segment(p1, p2, q2))
}

/// Checks zones and returns their polygons; errors name the zone.
pub fn validate_zones(zones: &[ZoneConfig], at: &str, errors: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for (i, z) in zones.iter().enumerate() {
        let here = format!("{at}.zones[{i}] '{}'", z.name);
        if z.name.is_empty() {
            errors.push(format!("{at}.zones[{i}] has no name"));
        }
        if !seen.insert(z.name.clone()) {
            errors.push(format!("{here}: the name is used by an earlier zone"));
        }
        match (z.kind, z.lane) {
            (ZoneKind::Lane, None) => errors.push(format!(
                "{here}: a zone of kind lane needs its lane number: lane = 1"
            )),
            (ZoneKind::Lane, Some(_)) | (_, None) => {}
            (_, Some(_)) => errors.push(format!(
                "{here}: only zones of kind lane have a lane number"
            )),
        }
        if z.polygon.len() < 3 {
            errors.push(format!(
                "{here}: a polygon needs at least 3 corners, found {}",
                z.polygon.len()
            ));
            continue;
        }
        if let Some(p) = z
            .polygon
            .iter()
            .find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
        {
            errors.push(format!(
                "{here}: corner [{}, {}] is outside the frame; coordinates are relative, 0..1",
                p[0], p[1]
            ));
        }
        if !Polygon(z.polygon.iter().map(|[x, y]| (*x, *y)).collect()).is_simple() {
            errors.push(format!("{here}: the polygon's edges cross or it has no area; list the corners in order around it"));
        }
    }
}

/// Where a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the crosswalk with this index.
    Crosswalk(usize),
    /// In the waiting area with this index.
    Waiting(usize),
    Outside,
}

/// A camera's zones, ready to test points against.
#[derive(Debug, Clone)]
pub struct ZoneMap {
    pub crosswalks: Vec<(String, Polygon)>,
    pub waiting: Vec<(String, Polygon)>,
}

impl ZoneMap {
    pub fn new(zones: &[ZoneConfig]) -> ZoneMap {
        let mut m = ZoneMap {
            crosswalks: vec![],
            waiting: vec![],
        };
        for z in zones {
            let p = (
                z.name.clone(),
                Polygon(z.polygon.iter().map(|[x, y]| (*x, *y)).collect()),
            );
            match z.kind {
                ZoneKind::Crosswalk => m.crosswalks.push(p),
                ZoneKind::WaitingArea => m.waiting.push(p),
                ZoneKind::Lane | ZoneKind::Restricted => {}
            }
        }
        m
    }

    /// Where a box's foot point (bottom centre) is in a `w` x `h` frame. A crosswalk wins
    /// where it overlaps a waiting area.
    pub fn place_of(&self, b: &BBox, w: u32, h: u32) -> Place {
        let (fx, fy) = b.foot();
        let (x, y) = (fx / w as f32, fy / h as f32);
        if let Some(i) = self.crosswalks.iter().position(|(_, p)| p.contains(x, y)) {
            return Place::Crosswalk(i);
        }
        if let Some(i) = self.waiting.iter().position(|(_, p)| p.contains(x, y)) {
            return Place::Waiting(i);
        }
        Place::Outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn square() -> Polygon {
        Polygon(vec![(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)])
    }

    #[test]
    fn contains_and_simplicity() {
        let s = square();
        assert!(s.contains(0.4, 0.4));
        assert!(!s.contains(0.7, 0.4));
        assert!(s.is_simple());
        let bowtie = Polygon(vec![(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]);
        assert!(!bowtie.is_simple());
        let flat = Polygon(vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]);
        assert!(!flat.is_simple());
        // Concave L shape.
        let l = Polygon(vec![
            (0.0, 0.0),
            (0.5, 0.0),
            (0.5, 0.2),
            (0.2, 0.2),
            (0.2, 0.5),
            (0.0, 0.5),
        ]);
        assert!(l.is_simple());
        assert!(l.contains(0.1, 0.4));
        assert!(!l.contains(0.4, 0.4));
    }

    #[test]
    fn validation_names_the_zone() {
        let zones = vec![
            ZoneConfig {
                name: "cw".into(),
                kind: ZoneKind::Crosswalk,
                polygon: vec![[0.0, 0.0], [1.2, 0.0], [0.5, 0.5]],
                lane: None,
            },
            ZoneConfig {
                name: "cw".into(),
                kind: ZoneKind::WaitingArea,
                polygon: vec![[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]],
                lane: None,
            },
        ];
        let mut e = Vec::new();
        validate_zones(&zones, "cameras[0]", &mut e);
        let all = e.join("\n");
        assert!(all.contains("'cw': corner [1.2, 0]"), "{all}");
        assert!(all.contains("used by an earlier zone"), "{all}");
        assert!(all.contains("edges cross"), "{all}");
    }

    fn convex() -> impl Strategy<Value = Polygon> {
        // A convex polygon: points on an ellipse at sorted angles.
        (
            0.2f32..0.8,
            0.2f32..0.8,
            0.05f32..0.2,
            0.05f32..0.2,
            proptest::collection::btree_set(0u32..360, 3..10),
        )
            .prop_map(|(cx, cy, rx, ry, angles)| {
                Polygon(
                    angles
                        .into_iter()
                        .map(|a| (a as f32).to_radians())
                        .map(|a| (cx + rx * a.cos(), cy + ry * a.sin()))
                        .collect(),
                )
            })
    }

    proptest! {
        #[test]
        fn convex_polygons_are_simple_and_contain_their_centroid(p in convex()) {
            prop_assume!(p.area().abs() > 1e-4);
            prop_assert!(p.is_simple());
            let n = p.0.len() as f32;
            let (cx, cy) = p.0.iter().fold((0.0, 0.0), |a, b| (a.0 + b.0 / n, a.1 + b.1 / n));
            prop_assert!(p.contains(cx, cy));
            // Points outside the bounding box are never inside.
            prop_assert!(!p.contains(1.5, cy));
            prop_assert!(!p.contains(cx, -0.5));
        }

        #[test]
        fn contains_is_invariant_under_corner_rotation(p in convex(), x in 0f32..1.0, y in 0f32..1.0, k in 0usize..10) {
            let mut q = p.0.clone();
            let k = k % q.len();
            q.rotate_left(k);
            let r = Polygon(q.iter().rev().copied().collect());
            prop_assert_eq!(p.contains(x, y), Polygon(q).contains(x, y));
            prop_assert_eq!(p.contains(x, y), r.contains(x, y));
        }

        #[test]
        fn place_follows_the_foot_point(y in 0f32..1.0) {
            let zones = vec![
                ZoneConfig { name: "wait_n".into(), kind: ZoneKind::WaitingArea, polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 0.3], [0.0, 0.3]], lane: None },
                ZoneConfig { name: "cw".into(), kind: ZoneKind::Crosswalk, polygon: vec![[0.0, 0.3], [1.0, 0.3], [1.0, 0.7], [0.0, 0.7]], lane: None },
                ZoneConfig { name: "wait_s".into(), kind: ZoneKind::WaitingArea, polygon: vec![[0.0, 0.7], [1.0, 0.7], [1.0, 1.0], [0.0, 1.0]], lane: None },
            ];
            let m = ZoneMap::new(&zones);
            let foot = y * 100.0;
            let b = BBox::new(40.0, foot - 20.0, 60.0, foot);
            let place = m.place_of(&b, 100, 100);
            let want = if y < 0.3 { Place::Waiting(0) } else if y < 0.7 { Place::Crosswalk(0) } else { Place::Waiting(1) };
            // Exactly on an edge either side is fine.
            if (y - 0.3).abs() > 1e-4 && (y - 0.7).abs() > 1e-4 {
                prop_assert_eq!(place, want);
            }
        }
    }
}
