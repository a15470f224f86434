//! A port of `github.com/google/shlex` at e7afc7fbc510, which rcc uses to
//! split `shell:` tasks and `preRunScripts`. It is not POSIX: inside double
//! quotes a backslash makes *any* next character literal and is dropped,
//! `#` starts a comment only at the start of a word, and quotes join onto
//! the surrounding word (`a"b c"` is `ab c`).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("EOF found after escape character")]
    TrailingEscape,
    #[error("EOF found when expecting closing quote")]
    UnclosedQuote,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Other,
    Space,
    DoubleQuote,
    SingleQuote,
    Escape,
    Comment,
}

fn classify(c: char) -> Class {
    match c {
        ' ' | '\t' | '\r' | '\n' => Class::Space,
        '"' => Class::DoubleQuote,
        '\'' => Class::SingleQuote,
        '\\' => Class::Escape,
        '#' => Class::Comment,
        _ => Class::Other,
    }
}

#[derive(Clone, Copy)]
enum State {
    Start,
    InWord,
    Escaping,
    EscapingQuoted,
    QuotingEscaping,
    Quoting,
    Comment,
}

/// `shlex.Split`: the words of `s`, comments skipped.
pub fn split(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut chars = s.chars();
    loop {
        // one token per round, as the Go tokenizer returns them
        let mut state = State::Start;
        let mut value = String::new();
        let mut is_word = false;
        let token_done = loop {
            let next = chars.next();
            let class = next.map(classify);
            match (state, class) {
                (State::Start, None) => return Ok(words),
                (State::Start, Some(Class::Space)) => {}
                (State::Start, Some(Class::DoubleQuote)) => {
                    is_word = true;
                    state = State::QuotingEscaping;
                }
                (State::Start, Some(Class::SingleQuote)) => {
                    is_word = true;
                    state = State::Quoting;
                }
                (State::Start, Some(Class::Escape)) => {
                    is_word = true;
                    state = State::Escaping;
                }
                (State::Start, Some(Class::Comment)) => {
                    is_word = false;
                    state = State::Comment;
                }
                (State::Start, Some(Class::Other)) => {
                    is_word = true;
                    value.extend(next);
                    state = State::InWord;
                }
                (State::InWord, None | Some(Class::Space)) => break true,
                (State::InWord, Some(Class::DoubleQuote)) => state = State::QuotingEscaping,
                (State::InWord, Some(Class::SingleQuote)) => state = State::Quoting,
                (State::InWord, Some(Class::Escape)) => state = State::Escaping,
                (State::InWord, Some(_)) => value.extend(next),
                (State::Escaping | State::EscapingQuoted, None) => {
                    return Err(SplitError::TrailingEscape)
                }
                (State::Escaping, Some(_)) => {
                    state = State::InWord;
                    value.extend(next);
                }
                (State::EscapingQuoted, Some(_)) => {
                    state = State::QuotingEscaping;
                    value.extend(next);
                }
                (State::QuotingEscaping | State::Quoting, None) => {
                    return Err(SplitError::UnclosedQuote)
                }
                (State::QuotingEscaping, Some(Class::DoubleQuote)) => state = State::InWord,
                (State::QuotingEscaping, Some(Class::Escape)) => state = State::EscapingQuoted,
                (State::QuotingEscaping, Some(_)) => value.extend(next),
                (State::Quoting, Some(Class::SingleQuote)) => state = State::InWord,
                (State::Quoting, Some(_)) => value.extend(next),
                (State::Comment, None) => break true,
                (State::Comment, Some(_)) if next == Some('\n') => break true,
                (State::Comment, Some(_)) => value.extend(next),
            }
        };
        if token_done && is_word {
            words.push(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        split(s).unwrap()
    }

    #[test]
    fn google_shlex_cases() {
        // the upstream test string
        let s = "one two \"three four\" \"five \\\"six\\\"\" seven#eight # nine # ten\n eleven 'twelve\\' thirteen=13 fourteen/14";
        assert_eq!(
            ok(s),
            [
                "one",
                "two",
                "three four",
                "five \"six\"",
                "seven#eight",
                "eleven",
                "twelve\\",
                "thirteen=13",
                "fourteen/14"
            ]
        );
        assert_eq!(split("one \"two"), Err(SplitError::UnclosedQuote));
        assert_eq!(split("one 'two"), Err(SplitError::UnclosedQuote));
        assert_eq!(split("one \\"), Err(SplitError::TrailingEscape));
        assert_eq!(split("\"a\\"), Err(SplitError::TrailingEscape));
    }

    #[test]
    fn quirks_rcc_inherits() {
        // a backslash in double quotes escapes anything and is dropped
        assert_eq!(ok(r#""a\b\\c""#), ["ab\\c"]);
        // quotes join onto the word around them
        assert_eq!(ok(r#"a"b c"d 'e f'g"#), ["ab cd", "e fg"]);
        // empty quotes make an empty word
        assert_eq!(ok(r#"a "" b"#), ["a", "", "b"]);
        // outside quotes a backslash escapes the next char, even a space
        assert_eq!(ok(r"a\ b c"), ["a b", "c"]);
        // a comment runs to the end of the line only
        assert_eq!(ok("a # b c\nd"), ["a", "d"]);
        assert_eq!(ok("# only a comment"), Vec::<String>::new());
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok(" \t\r\n "), Vec::<String>::new());
        assert_eq!(
            ok(r#"python -m robot -d output --logtitle "Task log" tasks/shilling.robot"#),
            [
                "python",
                "-m",
                "robot",
                "-d",
                "output",
                "--logtitle",
                "Task log",
                "tasks/shilling.robot"
            ]
        );
    }
}
