//! The weights file format (little-endian):
//!
//! ```text
//! magic              8 bytes  b"KRTCLF01"
//! featurizer_version u32      must equal features::FEATURIZER_VERSION
//! buckets_log2       u32      10..=20
//! n_classes          u32      12
//! labels_len         u32      then labels_len bytes: the TaskType names, comma-separated, in index order
//! temperature        f32      logits are divided by it before the softmax (calibration)
//! weight_scale       f32      a weight is `i8 * weight_scale`
//! bias               12 x f32
//! weights            (1 << buckets_log2) * 12 x i8, row-major by bucket
//! ```

use super::ClassifierError;
use super::features::FEATURIZER_VERSION;
use crate::task::TaskType;

pub(crate) const MAGIC: &[u8; 8] = b"KRTCLF01";
pub(crate) const N_CLASSES: usize = 12;

/// The decoded contents of a weights file. Public for the training example, which builds one,
/// serialises it with [`RawModel::to_bytes`] and loads it back with
/// [`super::Classifier::from_bytes`].
#[derive(Debug, Clone, PartialEq)]
pub struct RawModel {
    pub buckets_log2: u32,
    pub temperature: f32,
    pub weight_scale: f32,
    pub bias: [f32; N_CLASSES],
    /// `(1 << buckets_log2) * 12` quantised weights, row-major by bucket.
    pub weights: Vec<i8>,
}

/// The comma-separated class names, in [`TaskType::index`] order.
pub(crate) fn labels() -> String {
    TaskType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl RawModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        let labels = labels();
        let mut out = Vec::with_capacity(64 + labels.len() + self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FEATURIZER_VERSION.to_le_bytes());
        out.extend_from_slice(&self.buckets_log2.to_le_bytes());
        out.extend_from_slice(&(N_CLASSES as u32).to_le_bytes());
        out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
        out.extend_from_slice(labels.as_bytes());
        out.extend_from_slice(&self.temperature.to_le_bytes());
        out.extend_from_slice(&self.weight_scale.to_le_bytes());
        for b in self.bias {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend(self.weights.iter().map(|&w| w as u8));
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<RawModel, ClassifierError> {
        let mut r = Reader { b, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(ClassifierError::BadMagic);
        }
        let fv = r.u32()?;
        if fv != FEATURIZER_VERSION {
            return Err(ClassifierError::FeaturizerVersion {
                file: fv,
                code: FEATURIZER_VERSION,
            });
        }
        let buckets_log2 = r.u32()?;
        if !(10..=20).contains(&buckets_log2) {
            return Err(ClassifierError::Invalid("buckets_log2 out of range"));
        }
        if r.u32()? as usize != N_CLASSES {
            return Err(ClassifierError::Invalid("class count is not 12"));
        }
        let labels_len = r.u32()? as usize;
        if r.take(labels_len)? != labels().as_bytes() {
            return Err(ClassifierError::Invalid(
                "class labels differ from TaskType::ALL",
            ));
        }
        let temperature = r.f32()?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ClassifierError::Invalid("temperature must be positive"));
        }
        let weight_scale = r.f32()?;
        if !(weight_scale.is_finite() && weight_scale >= 0.0) {
            return Err(ClassifierError::Invalid("weight scale must be finite"));
        }
        let mut bias = [0.0f32; N_CLASSES];
        for x in &mut bias {
            *x = r.f32()?;
            if !x.is_finite() {
                return Err(ClassifierError::Invalid("bias must be finite"));
            }
        }
        let n = (1usize << buckets_log2) * N_CLASSES;
        let weights = r.take(n)?.iter().map(|&x| x as i8).collect();
        if r.pos != b.len() {
            return Err(ClassifierError::Invalid("trailing bytes"));
        }
        Ok(RawModel {
            buckets_log2,
            temperature,
            weight_scale,
            bias,
            weights,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ClassifierError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(ClassifierError::Truncated)?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, ClassifierError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn f32(&mut self) -> Result<f32, ClassifierError> {
        Ok(f32::from_bits(self.u32()?))
    }
}

/// FNV-1a 64 of the file: the classifier's version string.
pub(crate) fn digest(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}
