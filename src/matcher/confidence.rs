//! How likely a match is a copy: a calibrated probability from all the evidence.
//!
//! Each match's evidence ([`Evidence`]) — the hash distances, what the geometric check
//! found (inliers, distinct corners, coverage), what the part-by-part comparison found
//! (agreement, a part replaced) — goes into a logistic model whose coefficients
//! ([`MODEL`]) were fitted by `tools/eval/fit_confidence.py` on the tune split of the
//! evaluation corpus: `confidence = 1 / (1 + e^-(b + Σ wᵢ xᵢ))`, the probability that
//! the listing is a copy of that stored photo. The fit constrains every weight to the
//! sign that makes the confidence monotone in its evidence (closer hashes, more
//! inliers, more agreement never lower it; a replaced part never raises it).

use super::{parts, Match};

/// The model's inputs, in [`MODEL`]'s order (see [`Evidence::vector`]).
pub const FEATURES: [&str; 15] = [
    "distance",
    "phash_distance",
    "verified",
    "ln_inliers",
    "ln_distinct",
    "coverage",
    "compared",
    "agreement",
    "differed",
    "differed_share",
    "replaced",
    "ln_detail",
    "detail_in_view",
    "uncompared_distance",
    "hash_fit",
];

/// A logistic model: intercept and one weight per [`FEATURES`] entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    pub intercept: f32,
    pub weights: [f32; FEATURES.len()],
}

/// Fitted by `tools/eval/fit_confidence.py` on the tune split of `tools/eval`'s corpus,
/// variant a, seed 1 (3,459 queries, 15,876 matches of which 1,867 copies). `verified`,
/// the inlier counts, `replaced` and `detail_in_view` came out pinned at 0 by the sign
/// constraint (the part comparison and the coverage carry what they would say).
pub const MODEL: Model = Model {
    intercept: -0.8283,
    weights: [
        -0.9944, -0.8031, 0.0, 0.0, 0.0, 1.714, -0.09761, 4.393, -3.937, -1.93, 0.0, -0.09572, 0.0, -2.963, 0.3602,
    ],
};

/// The evidence behind one match, as the model reads it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evidence {
    /// Best PDQ distance over the allowed pairs of views, in 64ths (0–4).
    pub distance: f32,
    /// pHash distance of the whole images, in 64ths (0.5 when the entry has none).
    pub phash_distance: f32,
    /// 1 when the local-feature check accepted the stored photo.
    pub verified: f32,
    /// ln(1 + inliers), ln(1 + distinct corners) of that check (0 without one).
    pub ln_inliers: f32,
    pub ln_distinct: f32,
    /// The larger of the two coverages of the inliers (0–1).
    pub coverage: f32,
    /// 1 when the part-by-part comparison ran.
    pub compared: f32,
    /// Its agreement (0–1), 1 when a part was replaced, that part's share, and
    /// ln(1 + detail cells compared).
    pub agreement: f32,
    pub differed: f32,
    pub differed_share: f32,
    /// Share of the stored photo's corners lost in its exact frame (0 when not).
    pub replaced: f32,
    pub ln_detail: f32,
    /// Share of the stored photo's detail that the listing shows (0 without a
    /// comparison).
    pub detail_in_view: f32,
    /// `distance` when no part-by-part comparison ran (a hash match alone), else 0: the
    /// hash distance says more when it is all there is.
    pub uncompared_distance: f32,
    /// 1 when the part-by-part comparison ran through the alignment the hash match
    /// implies (the local features fitted no transform; see `matcher::hash_fit`).
    pub hash_fit: f32,
    /// Not a model input: whether the match may be acted on automatically at all (no
    /// part-by-part comparison that fails to confirm the copy or shows only part of the
    /// stored photo's detail, no part replaced in the exact frame).
    pub can_flag: bool,
}

impl Evidence {
    /// Read off a match; `query_phash` is the listing's pHash, when it has one.
    pub fn of(m: &Match, query_phash: Option<u64>) -> Evidence {
        let phash_distance = match (query_phash, m.entry.phash) {
            (Some(q), Some(e)) => (q ^ e).count_ones() as f32 / 64.0,
            _ => 0.5,
        };
        let v = m.verified.as_ref();
        let p = m.parts.as_ref();
        let d = p.and_then(|p| p.differed);
        Evidence {
            distance: m.distance as f32 / 64.0,
            phash_distance,
            verified: f32::from(u8::from(v.is_some())),
            ln_inliers: v.map_or(0.0, |v| (v.inliers as f32).ln_1p()),
            ln_distinct: v.map_or(0.0, |v| (v.distinct as f32).ln_1p()),
            coverage: v.map_or(0.0, |v| v.listing_coverage.max(v.stored_coverage)),
            compared: f32::from(u8::from(p.is_some())),
            agreement: p.map_or(0.0, |p| p.agreement),
            differed: f32::from(u8::from(d.is_some())),
            differed_share: d.map_or(0.0, |d| d.share),
            replaced: m.replaced.unwrap_or(0.0),
            ln_detail: p.map_or(0.0, |p| (p.detail_cells as f32).ln_1p()),
            detail_in_view: p.map_or(0.0, |p| p.detail_in_view),
            uncompared_distance: if p.is_some() { 0.0 } else { m.distance as f32 / 64.0 },
            hash_fit: f32::from(u8::from(p.is_some_and(|p| p.aligned == parts::Aligned::ByHash))),
            can_flag: p.is_none_or(|p| p.confirmed() && p.shows_all_detail()) && m.replaced.is_none(),
        }
    }

    /// The model's input vector, in [`FEATURES`] order.
    pub fn vector(&self) -> [f32; FEATURES.len()] {
        [
            self.distance,
            self.phash_distance,
            self.verified,
            self.ln_inliers,
            self.ln_distinct,
            self.coverage,
            self.compared,
            self.agreement,
            self.differed,
            self.differed_share,
            self.replaced,
            self.ln_detail,
            self.detail_in_view,
            self.uncompared_distance,
            self.hash_fit,
        ]
    }
}

impl Model {
    /// The probability (0–1) that the evidence is that of a copy.
    pub fn confidence(&self, e: &Evidence) -> f32 {
        let z = self.intercept + self.weights.iter().zip(e.vector()).map(|(w, x)| w * x).sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// +1: more of it is more evidence of a copy; -1: less; 0: no direction.
    const DIRECTION: [i8; FEATURES.len()] = [-1, -1, 1, 1, 1, 1, 0, 1, -1, -1, -1, 0, 1, -1, 0];

    fn evidence(v: [f32; FEATURES.len()]) -> Evidence {
        Evidence {
            distance: v[0],
            phash_distance: v[1],
            verified: v[2],
            ln_inliers: v[3],
            ln_distinct: v[4],
            coverage: v[5],
            compared: v[6],
            agreement: v[7],
            differed: v[8],
            differed_share: v[9],
            replaced: v[10],
            ln_detail: v[11],
            detail_in_view: v[12],
            uncompared_distance: v[13],
            hash_fit: v[14],
            can_flag: true,
        }
    }

    #[test]
    fn vector_follows_the_feature_names() {
        let v: [f32; FEATURES.len()] = std::array::from_fn(|i| i as f32);
        assert_eq!(evidence(v).vector(), v);
        let json = serde_json::to_value(evidence(v)).unwrap();
        for (i, name) in FEATURES.iter().enumerate() {
            assert_eq!(json[name].as_f64(), Some(i as f64), "{name}");
        }
    }

    #[test]
    fn confidence_is_monotone_in_each_piece_of_evidence() {
        // From many starting points, raising one input by a step moves the confidence
        // only the way its direction says (or not at all).
        let starts = [
            [0.0, 0.0, 1.0, 4.0, 3.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 5.0, 1.0, 0.0, 0.0],
            [0.7, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7, 0.0],
            [0.3, 0.2, 1.0, 2.5, 2.5, 0.6, 1.0, 0.8, 1.0, 0.05, 0.2, 6.0, 0.6, 0.0, 0.0],
            [0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 6.0, 1.0, 0.0, 1.0],
        ];
        for start in starts {
            for (i, &dir) in DIRECTION.iter().enumerate() {
                let mut up = start;
                up[i] += 0.25;
                let (before, after) = (MODEL.confidence(&evidence(start)), MODEL.confidence(&evidence(up)));
                match dir {
                    1 => assert!(after >= before, "{}: {before} → {after}", FEATURES[i]),
                    -1 => assert!(after <= before, "{}: {before} → {after}", FEATURES[i]),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn confidence_is_a_probability() {
        for v in [[0.0; FEATURES.len()], [4.0; FEATURES.len()], [-1.0; FEATURES.len()]] {
            let c = MODEL.confidence(&evidence(v));
            assert!((0.0..=1.0).contains(&c), "{c}");
        }
    }
}
