//! The task types requests are classified into.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Writing, completing, explaining or fixing code.
    Code,
    /// Arithmetic, word problems, proofs, step-by-step reasoning.
    Math,
    /// Condensing a given text.
    Summarization,
    /// Pulling structured facts out of a given text (entities, fields, JSON).
    Extraction,
    /// Assigning a given text to labels (sentiment, topic, intent, spam).
    Classification,
    /// Translating a given text between languages.
    Translation,
    /// Stories, poems, songs, fiction.
    CreativeWriting,
    /// Rewriting, editing, proofreading, changing tone of a given text.
    Rewriting,
    /// Knowledge questions without a given context.
    OpenQa,
    /// Questions to be answered from a given context.
    ClosedQa,
    /// Lists of ideas, names, options.
    Brainstorming,
    /// Greetings, small talk, anything else.
    Chat,
}

impl TaskType {
    pub const ALL: [TaskType; 12] = [
        TaskType::Code,
        TaskType::Math,
        TaskType::Summarization,
        TaskType::Extraction,
        TaskType::Classification,
        TaskType::Translation,
        TaskType::CreativeWriting,
        TaskType::Rewriting,
        TaskType::OpenQa,
        TaskType::ClosedQa,
        TaskType::Brainstorming,
        TaskType::Chat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Code => "code",
            TaskType::Math => "math",
            TaskType::Summarization => "summarization",
            TaskType::Extraction => "extraction",
            TaskType::Classification => "classification",
            TaskType::Translation => "translation",
            TaskType::CreativeWriting => "creative_writing",
            TaskType::Rewriting => "rewriting",
            TaskType::OpenQa => "open_qa",
            TaskType::ClosedQa => "closed_qa",
            TaskType::Brainstorming => "brainstorming",
            TaskType::Chat => "chat",
        }
    }

    pub fn parse(s: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Position in [`TaskType::ALL`] (the classifier's output index).
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indices_match_all() {
        for (i, t) in TaskType::ALL.into_iter().enumerate() {
            assert_eq!(TaskType::parse(t.as_str()), Some(t));
            assert_eq!(t.index(), i);
        }
    }
}
