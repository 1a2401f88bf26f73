//! Renders one plate to a JPEG: `cargo run --example render_plate -- 苏E12345 blue out.jpg`.
use edge_node::plategen::{PlateFont, PlateStyle};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let style: PlateStyle = serde_json::from_str(&format!("\"{}\"", args[2])).expect("style");
    let font = PlateFont::load(&PlateFont::default_path()).expect("font");
    let img = font.render(&args[1], style, 1.0);
    let enc = jpeg_encoder::Encoder::new_file(&args[3], 95).expect("out");
    enc.encode(
        &img.data,
        img.width as u16,
        img.height as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .expect("encode");
}
