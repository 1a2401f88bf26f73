//! The plate path on real photographs (../shared/data/real-plates, or REAL_PLATES_DIR): the
//! CCPD scenes, plates tilted and seen at an angle, are found where their labels put them,
//! read in the single-row layout (an oblique plate's corners look as short as a two-row
//! plate's), blue, and read exactly (all but one at most). Skipped, saying so, where the
//! data is absent.

use benches::realplates;
use edge_node::frame::Frame;
use edge_node::plate::{PlatePipeline, ReadTimings};
use protocol::plate::PlateColor;

#[test]
fn real_scenes_are_found_read_in_one_row_and_blue() {
    let Some(dir) = realplates::data_dir() else {
        eprintln!("real plates absent (REAL_PLATES_DIR or ../shared/data/real-plates): skipped");
        return;
    };
    let root = benches::repo_root();
    let mut p = PlatePipeline::load(
        &root.join("models/clp_det.toml"),
        &[
            root.join("models/ppocrv4_rec.toml"),
            root.join("models/clp_rec.toml"),
        ],
        &benches::models_dir(),
        &benches::ort_library(),
        2,
    )
    .expect("plate models (run scripts/setup.sh)");
    let photos = realplates::ccpd_photos(&dir.join("scenes")).unwrap();
    assert_eq!(photos.len(), 16, "the CCPD scenes");
    let mut exact = 0;
    let mut t = ReadTimings::default();
    for photo in &photos {
        let (w, h, rgb) = realplates::decode_jpeg(&photo.path).unwrap();
        let frame = Frame {
            seq: 0,
            time_ms: 0,
            width: w as u32,
            height: h as u32,
            rgb: std::sync::Arc::new(rgb),
        };
        let label = &photo.plates[0];
        let whole = protocol::BBox::new(0.0, 0.0, w as f32, h as f32);
        let found = p.find(&frame, &whole, (0.0, 0.0), Some(1.0)).unwrap();
        let lc = label.corners.unwrap();
        let hit = found
            .iter()
            .find(|f| f.bbox().iou(&realplates::corners_box(&lc)) >= 0.5)
            .unwrap_or_else(|| panic!("{}: no plate found where the label says", label.text));
        assert!(
            realplates::corner_error(&hit.corners, &lc) < 10.0,
            "{}: corners {:?}, labelled {lc:?}",
            label.text,
            hit.corners
        );
        let read = p
            .read_found(&frame, hit, true, &mut t)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: nothing read", label.text));
        assert!(!read.two_row, "{} read as two rows", label.text);
        assert_eq!(read.colour, Some(PlateColor::Blue), "{}", label.text);
        if read.text() == label.text {
            exact += 1;
        } else {
            eprintln!("{} read {}", label.text, read.text());
        }
    }
    assert!(exact >= 15, "{exact} of 16 read exactly");
}
