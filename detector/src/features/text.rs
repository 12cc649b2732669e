//! Free text in a request (BYTES elements, prompts, long parameter values)
//! as a bottom-k MinHash of its words (Broder 1997), so that a client's
//! successive texts can be compared. A one-word substitution in a sentence
//! keeps most of its words (Jaccard similarity about 0.9); two ordinary
//! prompts share a few common words (0.1–0.3). A chain of near-identical
//! texts is how word-substitution attacks (TextFooler) search for an
//! adversarial example, and how membership inference probes one record.

/// Word hashes kept: the K smallest distinct ones.
pub const K: usize = 16;
/// Words a value needs to count as text (identifiers, codes and names do not).
const MIN_WORDS: usize = 3;
/// Bytes of one value read for words.
const MAX_VALUE_BYTES: usize = 4096;

/// The bottom-k sketch of the words of a request's text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextSketch {
    /// The smallest distinct word hashes, ascending; `len` of them are set.
    mins: [u32; K],
    len: u8,
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
            // FNV-1a over the lower-cased word, folded to 32 bits.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in w {
                h ^= u64::from(b.to_ascii_lowercase());
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            sketch.insert((h ^ (h >> 32)) as u32);
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

    #[test]
    fn long_texts_keep_the_k_smallest_hashes() {
        let words: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
        let s = sketch(&words.join(" "));
        assert_eq!(usize::from(s.len), K);
        assert!(s.mins.windows(2).all(|w| w[0] < w[1]));
        let mut fewer = words;
        fewer[7] = "other".into();
        assert!(s.similarity(&sketch(&fewer.join(" "))) >= 0.8);
    }
}
