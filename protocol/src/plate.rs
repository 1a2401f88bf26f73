//! Licence plates (GA 36): normalise a read, check it against the grammar of every plate
//! class, infer the class and colour, and fix the usual OCR confusions.
//!
//! Characters: P province, A issuing-authority letter `[A-HJ-NP-Z]`, S serial
//! `[0-9A-HJ-NP-Z]` (never I or O), D digit. Strict mode also requires the ordinary serial to
//! follow one of the issued letter/digit patterns; lenient mode accepts any serial of the
//! right length (custom plates exist). A read that fits no grammar in either mode is a
//! suspected fake, to be confirmed over several frames by the caller.

use serde::{Deserialize, Serialize};

pub const PROVINCES: &str = "京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新";

/// 号牌种类 (GA 24.7 codes as used by GA/T 1400 `PlateClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateClass {
    /// 01 大型汽车 (yellow).
    LargeVehicle,
    /// 02 小型汽车 (blue).
    SmallCar,
    /// 03 使馆汽车.
    Embassy,
    /// 04 领馆汽车.
    Consulate,
    /// 15 挂车.
    Trailer,
    /// 16 教练汽车.
    DrivingSchool,
    /// 23 警用汽车.
    Police,
    /// 26 香港入出境车.
    HongKong,
    /// 27 澳门入出境车.
    Macao,
    /// 31 武警号牌.
    ArmedPolice,
    /// 51 大型新能源汽车.
    LargeNewEnergy,
    /// 52 小型新能源汽车.
    SmallNewEnergy,
}

impl PlateClass {
    pub fn code(self) -> &'static str {
        match self {
            PlateClass::LargeVehicle => "01",
            PlateClass::SmallCar => "02",
            PlateClass::Embassy => "03",
            PlateClass::Consulate => "04",
            PlateClass::Trailer => "15",
            PlateClass::DrivingSchool => "16",
            PlateClass::Police => "23",
            PlateClass::HongKong => "26",
            PlateClass::Macao => "27",
            PlateClass::ArmedPolice => "31",
            PlateClass::LargeNewEnergy => "51",
            PlateClass::SmallNewEnergy => "52",
        }
    }

    /// The plate colour this class is issued in.
    pub fn colour(self) -> PlateColor {
        match self {
            PlateClass::SmallCar => PlateColor::Blue,
            PlateClass::LargeVehicle | PlateClass::Trailer | PlateClass::DrivingSchool => {
                PlateColor::Yellow
            }
            PlateClass::SmallNewEnergy => PlateColor::Green,
            PlateClass::LargeNewEnergy => PlateColor::YellowGreen,
            PlateClass::Police | PlateClass::ArmedPolice => PlateColor::White,
            PlateClass::Embassy
            | PlateClass::Consulate
            | PlateClass::HongKong
            | PlateClass::Macao => PlateColor::Black,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateColor {
    Blue,
    Yellow,
    /// Green gradient (small new-energy).
    Green,
    /// Yellow-green (large new-energy).
    YellowGreen,
    White,
    Black,
}

impl PlateColor {
    /// GA/T 1400 ColorType code (yellow-green has none of its own: 99 other).
    pub fn ga1400_code(self) -> &'static str {
        match self {
            PlateColor::Black => "1",
            PlateColor::White => "2",
            PlateColor::Blue => "5",
            PlateColor::Yellow => "6",
            PlateColor::Green => "9",
            PlateColor::YellowGreen => "99",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Strict,
    Lenient,
}

/// A read that fits a grammar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plate {
    /// Normalised text, e.g. `苏E12345` (no dot, upper case, confusions fixed).
    pub text: String,
    pub class: PlateClass,
    pub colour: PlateColor,
    /// I/O read where only 1/0 can stand were corrected.
    pub corrected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlateError {
    #[error("plate read is empty")]
    Empty,
    #[error("plate '{0}' fits no GA 36 grammar (suspected fake)")]
    NoGrammar(String),
}

fn is_letter(c: char) -> bool {
    c.is_ascii_uppercase() && c != 'I' && c != 'O'
}
fn is_serial(c: char) -> bool {
    c.is_ascii_digit() || is_letter(c)
}
fn is_province(c: char) -> bool {
    PROVINCES.contains(c)
}

/// Removes separators, upper-cases ASCII, maps full-width forms to ASCII.
pub fn normalise(raw: &str) -> String {
    raw.chars()
        .filter_map(|c| {
            let c = match c {
                '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                    char::from_u32(c as u32 - 0xFEE0)?
                }
                c => c,
            };
            match c {
                '·' | '•' | '.' | ' ' | '-' | '\u{3000}' | '\u{30FB}' => None,
                c => Some(c.to_ascii_uppercase()),
            }
        })
        .collect()
}

/// After the issuing-authority letter, letters I and O cannot stand: they are 1 and 0.
fn fix_confusions(chars: &mut [char], from: usize) -> bool {
    let mut changed = false;
    for c in chars.iter_mut().skip(from) {
        match *c {
            'I' => {
                *c = '1';
                changed = true;
            }
            'O' => {
                *c = '0';
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

const STRICT_SERIALS: [&str; 10] = [
    "DDDDD", "LDDDD", "LLDDD", "DLDDD", "DDLDD", "DDDLD", "DDDDL", "LDDDL", "DDDLL", "LDLDD",
];

fn serial_shape(s: &[char]) -> String {
    s.iter()
        .map(|c| if c.is_ascii_digit() { 'D' } else { 'L' })
        .collect()
}

/// Parses a plate read. `colour` is what the camera saw, when known: it tells a yellow large
/// vehicle (01) from a blue small car (02), whose texts share one grammar.
pub fn parse(raw: &str, colour: Option<PlateColor>, mode: Mode) -> Result<Plate, PlateError> {
    let text = normalise(raw);
    if text.is_empty() {
        return Err(PlateError::Empty);
    }
    let mut c: Vec<char> = text.chars().collect();
    // Embassy: 使 + 6 digits, or 6 digits + 使.
    let corrected_all = |c: &mut Vec<char>, from| fix_confusions(c, from);
    if c.len() == 7 && (c[0] == '使' || c[6] == '使') {
        let mut d = c.clone();
        let fixed = corrected_all(&mut d, 0);
        let digits: Vec<char> = if d[0] == '使' {
            d[1..].to_vec()
        } else {
            d[..6].to_vec()
        };
        if digits.iter().all(|x| x.is_ascii_digit()) {
            return Ok(done(d, PlateClass::Embassy, fixed));
        }
    }
    // Armed police: WJ + optional province + 4 digits + [0-9TDSHBXJ].
    if c.len() >= 7 && c[0] == 'W' && c[1] == 'J' {
        let mut d = c.clone();
        let start = if is_province(d[2]) { 3 } else { 2 };
        if d.len() == start + 5 {
            let fixed = fix_confusions(&mut d[..start + 4], start);
            let last = d[start + 4];
            if d[start..start + 4].iter().all(|x| x.is_ascii_digit())
                && (last.is_ascii_digit() || "TDSHBXJ".contains(last))
            {
                return Ok(done(d, PlateClass::ArmedPolice, fixed));
            }
        }
    }
    if c.len() < 7 || !is_province(c[0]) || !is_letter(c[1]) {
        return Err(PlateError::NoGrammar(text));
    }
    let fixed = fix_confusions(&mut c, 2);
    let tail = &c[2..];
    let last = *tail.last().expect("len >= 7");
    let class = match (tail.len(), last) {
        (5, _) if tail.iter().all(|x| is_serial(*x)) => {
            if mode == Mode::Strict && !STRICT_SERIALS.contains(&serial_shape(tail).as_str()) {
                return Err(PlateError::NoGrammar(text));
            }
            match colour {
                Some(PlateColor::Yellow) => PlateClass::LargeVehicle,
                _ => PlateClass::SmallCar,
            }
        }
        (5, '挂' | '学' | '警') if tail[..4].iter().all(|x| is_serial(*x)) => match last {
            '挂' => PlateClass::Trailer,
            '学' => PlateClass::DrivingSchool,
            _ => PlateClass::Police,
        },
        (5, '领') if tail[..4].iter().all(|x| x.is_ascii_digit()) => PlateClass::Consulate,
        (5, '港' | '澳')
            if c[0] == '粤' && c[1] == 'Z' && tail[..4].iter().all(|x| is_serial(*x)) =>
        {
            if last == '港' {
                PlateClass::HongKong
            } else {
                PlateClass::Macao
            }
        }
        (6, _)
            if (tail[0] == 'D' || tail[0] == 'F')
                && is_serial(tail[1])
                && tail[2..].iter().all(|x| x.is_ascii_digit()) =>
        {
            PlateClass::SmallNewEnergy
        }
        (6, 'D' | 'F') if tail[..5].iter().all(|x| x.is_ascii_digit()) => {
            PlateClass::LargeNewEnergy
        }
        _ => return Err(PlateError::NoGrammar(text)),
    };
    Ok(done(c, class, fixed))
}

fn done(chars: Vec<char>, class: PlateClass, corrected: bool) -> Plate {
    Plate {
        text: chars.into_iter().collect(),
        class,
        colour: class.colour(),
        corrected,
    }
}

/// Every character a normalised plate holds: provinces, letters, digits and the suffixes of
/// special plates (trailer, coach school, police, Hong Kong, Macau, consulate, embassy,
/// emergency).
pub fn plate_alphabet() -> impl Iterator<Item = char> + Clone {
    PROVINCES
        .chars()
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain("挂学警港澳领使应急".chars())
}

/// Every plate over [`plate_alphabet`] within one edit (a character replaced, dropped or
/// added) of `plate`, `plate` itself included: what an operator means by "the plate, or a
/// misread of it". Sorted, without duplicates; about 1,300 strings for an 8-character plate.
pub fn within_one_edit(plate: &str) -> Vec<String> {
    let p: Vec<char> = normalise(plate).chars().collect();
    let mut out = vec![p.iter().collect::<String>()];
    for i in 0..=p.len() {
        for c in plate_alphabet() {
            // Added before position i.
            let mut v = p.clone();
            v.insert(i, c);
            out.push(v.into_iter().collect());
            if i < p.len() && p[i] != c {
                let mut v = p.clone();
                v[i] = c;
                out.push(v.into_iter().collect());
            }
        }
        if i < p.len() && p.len() > 1 {
            let mut v = p.clone();
            v.remove(i);
            out.push(v.into_iter().collect());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Levenshtein distance in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_one_edit_is_exactly_the_one_edit_neighbourhood() {
        let n = within_one_edit("苏E·12345");
        assert!(n.contains(&"苏E12345".to_string()));
        assert!(n.contains(&"苏E12845".to_string())); // replaced
        assert!(n.contains(&"浙E12345".to_string())); // province replaced
        assert!(n.contains(&"苏E1245".to_string())); // dropped
        assert!(n.contains(&"苏E123456".to_string())); // added
        assert!(n.contains(&"苏E12345挂".to_string()));
        assert!(!n.contains(&"苏E12354".to_string())); // a swap is two edits
        assert!(n.iter().all(|v| edit_distance(v, "苏E12345") <= 1));
        // 7 replaced x (alphabet - 1) + 8 added x alphabet + 7 dropped, less duplicates.
        let a = plate_alphabet().count();
        assert!(n.len() > 7 * (a - 1) && n.len() <= 1 + 7 * (a - 1) + 8 * a + 7);
        assert_eq!(edit_distance("苏E12345", "苏E1234"), 1);
        assert_eq!(edit_distance("苏E12345", "苏E21345"), 2);
        assert_eq!(edit_distance("", "ab"), 2);
    }
    use proptest::prelude::*;

    fn class(raw: &str) -> Option<PlateClass> {
        parse(raw, None, Mode::Strict).ok().map(|p| p.class)
    }

    #[test]
    fn every_class() {
        assert_eq!(class("苏E12345"), Some(PlateClass::SmallCar));
        assert_eq!(
            parse("苏E·12345", Some(PlateColor::Yellow), Mode::Strict)
                .unwrap()
                .class,
            PlateClass::LargeVehicle
        );
        assert_eq!(class("粤BD12345"), Some(PlateClass::SmallNewEnergy));
        assert_eq!(class("粤BFA1234"), Some(PlateClass::SmallNewEnergy));
        assert_eq!(class("粤B12345D"), Some(PlateClass::LargeNewEnergy));
        assert_eq!(class("沪A1234挂"), Some(PlateClass::Trailer));
        assert_eq!(class("浙A123学"), None, "3 serial chars is too short");
        assert_eq!(class("浙A1234学"), Some(PlateClass::DrivingSchool));
        assert_eq!(class("京A0006警"), Some(PlateClass::Police));
        assert_eq!(class("沪A1234领"), Some(PlateClass::Consulate));
        assert_eq!(class("使123456"), Some(PlateClass::Embassy));
        assert_eq!(class("123456使"), Some(PlateClass::Embassy));
        assert_eq!(class("粤Z1234港"), Some(PlateClass::HongKong));
        assert_eq!(class("粤Z1A34澳"), Some(PlateClass::Macao));
        assert_eq!(class("京Z1234港"), None, "cross-border plates are 粤Z");
        assert_eq!(class("WJ京1234X"), Some(PlateClass::ArmedPolice));
        assert_eq!(class("WJ12345"), Some(PlateClass::ArmedPolice));
        assert_eq!(PlateClass::SmallNewEnergy.colour().ga1400_code(), "9");
        assert_eq!(PlateClass::Police.code(), "23");
    }

    #[test]
    fn strict_and_lenient_serials() {
        assert_eq!(class("京AB1234"), Some(PlateClass::SmallCar), "LDDDD");
        assert_eq!(class("京A8B123"), Some(PlateClass::SmallCar), "DLDDD");
        // LLLDD is issued nowhere but custom plates exist.
        assert!(parse("京AABC12", None, Mode::Strict).is_err());
        assert_eq!(
            parse("京AABC12", None, Mode::Lenient).unwrap().class,
            PlateClass::SmallCar
        );
    }

    #[test]
    fn confusions_and_normalisation() {
        let p = parse(" 苏e·I234O ", None, Mode::Strict).unwrap();
        assert_eq!(p.text, "苏E12340");
        assert!(p.corrected);
        let p = parse("苏Ｅ１２３４５", None, Mode::Strict).unwrap();
        assert_eq!((p.text.as_str(), p.corrected), ("苏E12345", false));
        // I or O as the authority letter is never issued: fake.
        assert!(parse("苏I12345", None, Mode::Lenient).is_err());
        assert!(parse("苏O12345", None, Mode::Lenient).is_err());
    }

    #[test]
    fn fakes() {
        for raw in [
            "",
            "ABC1234",
            "苏E1234",
            "苏E123456",
            "美A12345",
            "苏E1234*",
            "WJ京123",
            "使12345",
        ] {
            assert!(parse(raw, None, Mode::Lenient).is_err(), "{raw:?} accepted");
        }
        assert_eq!(parse("", None, Mode::Strict), Err(PlateError::Empty));
        assert!(parse("X", None, Mode::Strict)
            .unwrap_err()
            .to_string()
            .contains("'X'"));
    }

    fn province() -> impl Strategy<Value = char> {
        proptest::sample::select(PROVINCES.chars().collect::<Vec<_>>())
    }
    fn letter() -> impl Strategy<Value = char> {
        proptest::sample::select("ABCDEFGHJKLMNPQRSTUVWXYZ".chars().collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = parse(&s, None, Mode::Strict);
            let _ = parse(&s, Some(PlateColor::Yellow), Mode::Lenient);
        }

        #[test]
        fn issued_ordinary_plates_parse(p in province(), a in letter(), shape in proptest::sample::select(STRICT_SERIALS.to_vec()), digits in "[0-9]{5}", letters in "[A-HJ-NP-Z]{5}") {
            let serial: String = shape.chars().zip(digits.chars().zip(letters.chars())).map(|(k, (d, l))| if k == 'D' { d } else { l }).collect();
            let raw = format!("{p}{a}{serial}");
            let got = parse(&raw, Some(PlateColor::Blue), Mode::Strict).unwrap();
            prop_assert_eq!(got.text, raw);
            prop_assert_eq!(got.class, PlateClass::SmallCar);
        }

        #[test]
        fn new_energy_plates_parse(p in province(), a in letter(), df in "[DF]", s in "[0-9A-HJ-NP-Z]", d4 in "[0-9]{4}", d5 in "[0-9]{5}") {
            let small = format!("{p}{a}{df}{s}{d4}");
            prop_assert_eq!(parse(&small, None, Mode::Strict).unwrap().class, PlateClass::SmallNewEnergy);
            let large = format!("{p}{a}{d5}{df}");
            prop_assert_eq!(parse(&large, None, Mode::Strict).unwrap().class, PlateClass::LargeNewEnergy);
        }
    }
}
