//! Event names: how a name is normalized so that names that differ only in composition,
//! whitespace or invisible characters at its ends are the same, and which characters show
//! anything at all.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// An event name as stored, so that names that differ only in these ways are the same: NFC (a
/// precomposed "é" and "e" with a combining accent are one text); runs of whitespace of any
/// kind (two spaces, a no-break space) made one space; the characters that never show in a
/// name (soft hyphen, zero-width space, word joiner, zero-width no-break space) removed; and
/// whitespace and invisible characters around it trimmed. Joiners and direction marks inside
/// a name are kept: emoji sequences and right-to-left scripts need them.
pub(super) fn normalize_name(raw: &str) -> String {
    let mut name = String::with_capacity(raw.len());
    let mut space_pending = false;
    for c in raw.chars() {
        if matches!(c, '\u{ad}' | '\u{200b}' | '\u{2060}' | '\u{feff}') {
            continue;
        }
        if c.is_whitespace() {
            space_pending = true;
            continue;
        }
        if space_pending {
            name.push(' ');
            space_pending = false;
        }
        name.push(c);
    }
    let trimmed = name.trim_matches(|c: char| {
        c.is_whitespace()
            || is_format(c)
            || c == BLANK_BRAILLE
            || (is_default_ignorable(c) && !is_variation_selector(c))
    });
    // Last, so that removing a character between a letter and its accent still composes.
    trimmed.nfc().collect()
}

/// Whether a text shows nothing at all: no character of it [`is_visible`]. What "blank"
/// means for every free text the API keeps (names, gates, descriptions, reasons, token
/// names), whitespace or not.
pub(super) fn is_blank(text: &str) -> bool {
    !text.chars().any(is_visible)
}

/// The Braille pattern with no dots: a symbol that prints as a blank.
const BLANK_BRAILLE: char = '\u{2800}';

/// A character that shows something by itself: a letter, number, punctuation, symbol or
/// private-use character that is not default-ignorable (Hangul fillers are letters that
/// show nothing) and not the blank Braille pattern. Whitespace, controls, format characters
/// and marks with no base show nothing.
fn is_visible(c: char) -> bool {
    let shows = matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    ) || c.general_category() == GeneralCategory::PrivateUse;
    shows && !is_default_ignorable(c) && c != BLANK_BRAILLE
}

/// Unicode general category Cf (format): zero-width spaces and joiners, direction marks,
/// the byte-order mark and their kin, which take no space on screen.
fn is_format(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// The Unicode property Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters
/// a renderer shows nothing for when it does not support them, whatever their category.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Variation selectors choose how the character before them looks (the emoji or the text
/// form of a heart): kept at the end of a name, where they still mean something.
fn is_variation_selector(c: char) -> bool {
    matches!(u32::from(c), 0xFE00..=0xFE0F | 0xE0100..=0xE01EF)
}
