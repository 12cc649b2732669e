//! Free text in a request (BYTES elements, prompts, long parameter values)
//! as a bottom-k MinHash of its words (Broder 1997), so that a client's
//! successive texts can be compared. A one-word substitution in a sentence
//! keeps most of its words (Jaccard similarity about 0.9); two ordinary
//! prompts share a few common words (0.1–0.3). A chain of near-identical
//! texts is how word-substitution attacks (TextFooler) search for an
//! adversarial example, and how membership inference probes one record.
//!
//! A request's texts are compared as a set ([`TextSet`]) with the client's
//! previous request's: texts both hold exactly (a chat's system prompt, tool
//! descriptions) are set aside, and the request is *near* when one of the
//! rest is nearly one of the other's rest, or when all its text is the same
//! as before. Pooled into one sketch, a fixed prompt or a batch's shared
//! vocabulary made every request of ordinary clients look alike; a single
//! "last value" depended on key order and was dodged by one more field.

/// Word hashes kept: the K smallest distinct ones.
pub const K: usize = 16;
/// Texts of one request kept for comparison (the longest).
pub const TEXTS: usize = 4;
/// Estimated word overlap (Jaccard) from which two texts count as nearly
/// the same: a one-word change in a 15-word sentence keeps about 0.9, two
/// ordinary prompts share 0.1–0.3.
pub const NEAR_TEXT: f64 = 0.6;
/// Words a value needs to count as text (identifiers, codes and names do not).
const MIN_WORDS: usize = 3;
/// Bytes of one value read for words.
const MAX_VALUE_BYTES: usize = 4096;

/// The bottom-k sketch of the words of one text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextSketch {
    /// The smallest distinct word hashes, ascending; `len` of them are set.
    mins: [u32; K],
    len: u8,
    /// Words read.
    words: u16,
    /// Hash of the whole word sequence (spacing and case aside): equal
    /// texts, whatever their length, have equal `whole`.
    whole: u64,
}

impl TextSketch {
    /// The sketch of the words of `v`, if it reads as text: at least
    /// [`MIN_WORDS`] runs of letters and digits (any non-ASCII byte counts as
    /// a letter), lower-cased, with spaces between them (an address or a
    /// dotted name is not text).
    pub fn of(v: &[u8]) -> Option<TextSketch> {
        let v = &v[..v.len().min(MAX_VALUE_BYTES)];
        let is_word = |b: &u8| b.is_ascii_alphanumeric() || *b >= 0x80;
        let words = || v.split(|b| !is_word(b)).filter(|w| !w.is_empty());
        let spaces = v.iter().filter(|b| b.is_ascii_whitespace()).take(MIN_WORDS - 1).count();
        if spaces < MIN_WORDS - 1 || words().nth(MIN_WORDS - 1).is_none() {
            return None;
        }
        let mut sketch = TextSketch::default();
        for w in words() {
            let h = word_hash(w);
            sketch.insert((h ^ (h >> 32)) as u32);
            sketch.words = sketch.words.saturating_add(1);
            sketch.whole = (sketch.whole ^ h).wrapping_mul(0x0100_0000_01b3).rotate_left(23);
        }
        Some(sketch)
    }

    fn insert(&mut self, h: u32) {
        let len = usize::from(self.len);
        let set = &self.mins[..len];
        if len == K && h >= set[K - 1] {
            return;
        }
        let Err(at) = set.binary_search(&h) else { return };
        let end = len.min(K - 1);
        self.mins.copy_within(at..end, at + 1);
        self.mins[at] = h;
        self.len = (len + 1).min(K) as u8;
    }

    /// Whether any text was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Estimated Jaccard similarity of the two word sets: of the K smallest
    /// hashes of their union, the share that both hold.
    pub fn similarity(&self, other: &TextSketch) -> f64 {
        let (a, b) = (&self.mins[..usize::from(self.len)], &other.mins[..usize::from(other.len)]);
        let (mut i, mut j, mut taken, mut both) = (0, 0, 0usize, 0u32);
        while taken < K && (i < a.len() || j < b.len()) {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x == y => {
                    both += 1;
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x < y => i += 1,
                (Some(_), None) => i += 1,
                _ => j += 1,
            }
            taken += 1;
        }
        if taken == 0 {
            0.0
        } else {
            f64::from(both) / taken as f64
        }
    }
}

/// [`super::fnv1a`] of the lower-cased word, folded as it is read (no copy).
fn word_hash(w: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in w {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The texts of one request: the [`TEXTS`] longest, and a fingerprint of
/// all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextSet {
    texts: [TextSketch; TEXTS],
    len: u8,
    /// Order-independent sum of every text's `whole`.
    all: u64,
}

impl TextSet {
    /// Adds `v` if it reads as text (see [`TextSketch::of`]).
    pub fn add(&mut self, v: &[u8]) {
        let Some(t) = TextSketch::of(v) else { return };
        self.all = self.all.wrapping_add(t.whole);
        let len = usize::from(self.len);
        if len < TEXTS {
            self.texts[len] = t;
            self.len += 1;
        } else if let Some(shortest) = self.texts.iter_mut().min_by_key(|x| x.words).filter(|x| x.words < t.words) {
            *shortest = t;
        }
    }

    /// Whether no value read as text.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn texts(&self) -> &[TextSketch] {
        &self.texts[..usize::from(self.len)]
    }

    /// Whether this request's text is nearly the `previous` one's: all of it
    /// the same, or, texts both hold exactly set aside, one of the rest
    /// within [`NEAR_TEXT`] of one of the other's rest.
    pub fn near(&self, previous: &TextSet) -> bool {
        if self.is_empty() || previous.is_empty() {
            return false;
        }
        if self.all == previous.all {
            return true;
        }
        let held = |t: &TextSketch, other: &TextSet| other.texts().iter().any(|o| o.whole == t.whole);
        let mut mine = self.texts().iter().filter(|t| !held(t, previous));
        mine.any(|t| previous.texts().iter().filter(|p| !held(p, self)).any(|p| t.similarity(p) >= NEAR_TEXT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(text: &str) -> TextSketch {
        TextSketch::of(text.as_bytes()).unwrap_or_else(|| panic!("not text: {text}"))
    }

    #[test]
    fn short_values_are_not_text() {
        for v in ["FP32", "input_ids", "alice@example.com", "a.b.c.d", "two words"] {
            assert_eq!(TextSketch::of(v.as_bytes()), None, "{v}");
        }
        assert!(!sketch("the film was great").is_empty());
    }

    #[test]
    fn one_word_changed_is_near_and_another_prompt_is_far() {
        let s = "the acting in this film was wooden and the plot made no sense at all to me";
        let one = "the acting in this film was stiff and the plot made no sense at all to me";
        let spaced = "the acting in  this film was wooden and the plot made no sense at all to me ";
        let other = "please summarise the attached quarterly report for the board in three bullet points";
        assert_eq!(sketch(s).similarity(&sketch(spaced)), 1.0);
        let near = sketch(s).similarity(&sketch(one));
        assert!(near >= 0.75, "{near}");
        let far = sketch(s).similarity(&sketch(other));
        assert!(far <= 0.3, "{far}");
        // Case does not matter; nothing compares with nothing.
        assert_eq!(sketch(s).similarity(&sketch(&s.to_uppercase())), 1.0);
        assert_eq!(TextSketch::default().similarity(&TextSketch::default()), 0.0);
    }

    fn set(texts: &[&str]) -> TextSet {
        let mut s = TextSet::default();
        for t in texts {
            s.add(t.as_bytes());
        }
        s
    }

    #[test]
    fn a_fixed_prompt_is_set_aside_and_the_changed_text_compared() {
        let system = "you are a helpful assistant for the support team of a large shop, answer briefly";
        let tools = "look up an order by its number and return its status and delivery date";
        let q1 = "how do I reset my password on the website";
        let q2 = "where is my parcel that I ordered last week";
        let q1b = "how do I reset my login on the website";
        // Another question with the same prompt and tools: not near.
        assert!(!set(&[system, q1, tools]).near(&set(&[system, q2, tools])));
        // One word of the question changed, or the same question again: near.
        assert!(set(&[system, q1b, tools]).near(&set(&[system, q1, tools])));
        assert!(set(&[system, q1, tools]).near(&set(&[system, q1, tools])));
        // A changing decoy field does not hide the chain.
        assert!(set(&[q1b, "purple monkey dishwasher seven"]).near(&set(&[q1, "quantum soup lighthouse nine"])));
        // A conversation that grows by one message: the new one is compared
        // with the one that left the window, not with the ones both hold.
        let (m1, m2, m3) =
            ("tell me a joke about cats please", "now one about dogs if you can", "and finally one about birds");
        assert!(!set(&[m2, m3]).near(&set(&[m1, m2])));
        assert!(!TextSet::default().near(&set(&[q1])));
    }

    #[test]
    fn the_longest_texts_are_kept() {
        let long = "the quarterly report shows revenue growth in every region except the north";
        let mut s = set(&["a b c", "d e f", "g h i", "j k l"]);
        s.add(long.as_bytes());
        assert!(s.texts().iter().any(|t| t.whole == sketch(long).whole), "{s:?}");
        assert_eq!(s.texts().len(), TEXTS);
    }

    #[test]
    fn long_texts_keep_the_k_smallest_hashes() {
        let words: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
        let s = sketch(&words.join(" "));
        assert_eq!(usize::from(s.len), K);
        // The K smallest of all the word hashes, ascending.
        let mut want: Vec<u32> = words
            .iter()
            .map(|w| {
                let h = word_hash(w.as_bytes());
                (h ^ (h >> 32)) as u32
            })
            .collect();
        want.sort_unstable();
        want.dedup();
        want.truncate(K);
        assert_eq!(s.mins.to_vec(), want);
        let mut fewer = words;
        fewer[7] = "other".into();
        assert!(s.similarity(&sketch(&fewer.join(" "))) >= 0.8);
    }
}
