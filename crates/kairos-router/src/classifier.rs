//! The request task classifier for `model="auto"`.
//!
//! A multinomial logistic regression over hashed features (see [`features`]): word unigrams and
//! bigrams of the last user message and the system text, the first and last tokens of the user
//! message, and a few structural facts (lengths, message count, tools, JSON mode, images). The
//! weights are learned offline by `examples/train_classifier.rs` from public data plus the
//! hand-written templates in `train/`, quantised to `i8` and embedded in the binary
//! (`data/classifier.bin`, < 1 MB); the probabilities are temperature-scaled on a calibration
//! split, so `confidence` is calibrated on data the model was not fitted on. In process, no
//! network, no allocation per token; the cost is linear in the prompt up to a cap
//! (`features::USER_HEAD_BYTES` + `features::USER_TAIL_BYTES`). See `docs/routing-classifier.md`
//! for the held-out evaluation.

pub mod features;
pub mod model;

use std::sync::LazyLock;

use crate::task::TaskType;
use features::{FeatureSink, Group, N_GROUPS};
use model::{N_CLASSES, RawModel};

/// What the classifier looks at. Built by the gateway from the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifierInput<'a> {
    /// Concatenated system/developer text.
    pub system: &'a str,
    /// The last user message's text.
    pub last_user: &'a str,
    /// Total chars of all message text (length feature).
    pub context_chars: usize,
    pub n_messages: usize,
    pub has_tools: bool,
    /// `response_format` is `json_object` or `json_schema`.
    pub json_mode: bool,
    pub has_images: bool,
}

/// The classifier's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classification {
    /// The most probable task.
    pub task: TaskType,
    /// `probs[task.index()]`: a calibrated probability that `task` is right.
    pub confidence: f32,
    /// Probabilities indexed by [`TaskType::index`]; they sum to 1.
    pub probs: [f32; N_CLASSES],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClassifierError {
    #[error("not a classifier weights file (bad magic)")]
    BadMagic,
    #[error("classifier weights file is truncated")]
    Truncated,
    #[error("weights were trained for featurizer v{file}, this build has v{code}")]
    FeaturizerVersion { file: u32, code: u32 },
    #[error("invalid classifier weights file: {0}")]
    Invalid(&'static str),
}

/// Probability given to `chat` when there is no text to classify (the other classes share the
/// rest equally): the answer is "chat", with a confidence that says we do not know.
pub const EMPTY_INPUT_CHAT_PROB: f32 = 0.25;

/// A loaded classifier. Cheap to share (`&'static` via [`Classifier::builtin`]).
#[derive(Clone)]
pub struct Classifier {
    mask: u32,
    weights: Vec<i8>,
    weight_scale: f32,
    bias: [f32; N_CLASSES],
    inv_temperature: f32,
    version: String,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the 786K weights.
        f.debug_struct("Classifier")
            .field("version", &self.version)
            .field("buckets", &(u64::from(self.mask) + 1))
            .finish_non_exhaustive()
    }
}

static BUILTIN_BYTES: &[u8] = include_bytes!("../data/classifier.bin");

static BUILTIN: LazyLock<Classifier> = LazyLock::new(|| {
    Classifier::from_bytes(BUILTIN_BYTES).unwrap_or_else(|_| Classifier::untrained())
});

/// Sums the quantised weight rows of each group's features.
struct Accumulator<'a> {
    weights: &'a [i8],
    mask: u32,
    acc: [[i32; N_CLASSES]; N_GROUPS],
}

impl FeatureSink for Accumulator<'_> {
    #[inline]
    fn add(&mut self, group: Group, hash: u32) {
        let row = (hash & self.mask) as usize * N_CLASSES;
        if let Some(w) = self.weights.get(row..row + N_CLASSES) {
            let acc = &mut self.acc[group as usize];
            for k in 0..N_CLASSES {
                acc[k] += i32::from(w[k]);
            }
        }
    }
}

impl Classifier {
    /// The classifier trained by `examples/train_classifier.rs`, embedded in the binary and
    /// parsed once. (Were the embedded file unreadable — a test guarantees it is not — this
    /// would be an untrained classifier whose [`version`](Self::version) is `"untrained"`.)
    pub fn builtin() -> &'static Classifier {
        &BUILTIN
    }

    /// Loads a weights file (the format is described in [`model`]).
    pub fn from_bytes(b: &[u8]) -> Result<Classifier, ClassifierError> {
        let raw = RawModel::from_bytes(b)?;
        Ok(Classifier {
            mask: (1u32 << raw.buckets_log2) - 1,
            weights: raw.weights,
            weight_scale: raw.weight_scale,
            bias: raw.bias,
            inv_temperature: 1.0 / raw.temperature,
            version: format!("tc1-{:016x}", model::digest(b)),
        })
    }

    /// All-zero weights: every input gets the uniform distribution (argmax: chat).
    fn untrained() -> Classifier {
        Classifier {
            mask: 0,
            weights: vec![0; N_CLASSES],
            weight_scale: 0.0,
            bias: [0.0; N_CLASSES],
            inv_temperature: 1.0,
            version: "untrained".to_owned(),
        }
    }

    /// Identifies the weights (a hash of the weights file), for receipts.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The temperature-scaled logits `(bias + features . weights) / temperature` whose softmax
    /// is [`Classification::probs`]; `None` when the input has no text at all (then
    /// [`classify`](Self::classify) answers chat with [`EMPTY_INPUT_CHAT_PROB`]).
    pub fn logits(&self, input: &ClassifierInput<'_>) -> Option<[f32; N_CLASSES]> {
        let mut acc = Accumulator {
            weights: &self.weights,
            mask: self.mask,
            acc: [[0; N_CLASSES]; N_GROUPS],
        };
        let counts = features::featurize(input, &mut acc);
        if counts.words == 0 {
            return None;
        }
        let values = counts.values();
        let mut logits = self.bias;
        for (g, v) in values.iter().enumerate() {
            let v = v * self.weight_scale;
            for (l, &a) in logits.iter_mut().zip(&acc.acc[g]) {
                *l += v * a as f32;
            }
        }
        for l in &mut logits {
            *l *= self.inv_temperature;
        }
        Some(logits)
    }

    /// Classifies one request. Deterministic; allocation-free.
    pub fn classify(&self, input: &ClassifierInput<'_>) -> Classification {
        let probs = match self.logits(input) {
            Some(logits) => softmax(&logits),
            None => {
                let rest = (1.0 - EMPTY_INPUT_CHAT_PROB) / (N_CLASSES - 1) as f32;
                let mut p = [rest; N_CLASSES];
                p[TaskType::Chat.index()] = EMPTY_INPUT_CHAT_PROB;
                p
            }
        };
        // First maximum in TaskType::ALL order (deterministic on ties).
        let mut best = 0;
        for k in 1..N_CLASSES {
            if probs[k] > probs[best] {
                best = k;
            }
        }
        Classification {
            task: TaskType::ALL[best],
            confidence: probs[best],
            probs,
        }
    }
}

fn softmax(logits: &[f32; N_CLASSES]) -> [f32; N_CLASSES] {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p = [0.0f32; N_CLASSES];
    let mut sum = 0.0f32;
    for (p, &l) in p.iter_mut().zip(logits) {
        *p = (l - max).exp();
        sum += *p;
    }
    for p in &mut p {
        *p /= sum;
    }
    p
}

#[cfg(test)]
mod tests;
