//! The GA 36 plate parser on any text, in both modes and with every colour: a plate or an
//! error, never a panic; the within-one-edit neighbours of any text are computed too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::plate::{self, Mode, PlateColor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let colours = [
        None,
        Some(PlateColor::Blue),
        Some(PlateColor::Yellow),
        Some(PlateColor::Green),
        Some(PlateColor::YellowGreen),
        Some(PlateColor::White),
        Some(PlateColor::Black),
    ];
    for colour in colours {
        for mode in [Mode::Strict, Mode::Lenient] {
            let _ = plate::parse(text, colour, mode);
        }
    }
    if text.chars().count() <= 12 {
        let _ = plate::within_one_edit(text);
    }
});
