//! The command/response dialogue with a modem (ITU-T V.250), sans-IO: one command in flight at
//! a time, its information lines gathered until the final result code, unsolicited result
//! codes taken out wherever they arrive (also between a command's information lines and its
//! `OK`), and a deadline per command.
//!
//! # A modem that stops answering
//!
//! A command whose deadline passes ends with [`AtError::Timeout`]. The client then *probes*
//! before it sends anything else: it writes `AT+CFUN?` and waits for its `+CFUN:` line and the
//! final code after it. A late `OK` of the command that timed out has no `+CFUN:` before it, so
//! it is recognised as stale and dropped instead of being taken as the answer to the next
//! command. After [`PROBES_BEFORE_UNRESPONSIVE`] unanswered probes the client reports
//! [`Notice::Unresponsive`], fails every queued command with [`AtError::Unresponsive`] (and
//! each one queued later, at the next probe), and keeps probing every
//! [`UNRESPONSIVE_PROBE_EVERY`]; the first answered probe reports [`Notice::Recovered`] and the
//! queue runs again. Nothing waits forever and nothing is matched to the wrong command.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::at::{CmeError, Final, Line, LineReader, LineStats, Urc, classify};
use crate::time::Instant;

/// Commands waiting behind the one in flight; more are refused.
pub const MAX_QUEUED: usize = 16;
/// Information lines kept per response; more end the command with [`AtError::TooManyLines`].
pub const MAX_INFO_LINES: usize = 8;
/// URCs kept until taken; more drop the oldest.
pub const MAX_URCS: usize = 32;
/// How long a probe waits for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Unanswered probes after which the modem counts as unresponsive.
pub const PROBES_BEFORE_UNRESPONSIVE: u32 = 3;
/// How often an unresponsive modem is probed.
pub const UNRESPONSIVE_PROBE_EVERY: Duration = Duration::from_secs(10);

const PROBE: &str = "AT+CFUN?";
const PROBE_ANSWER: &str = "+CFUN:";

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AtError {
    /// The modem answered `ERROR`.
    #[error("the modem answered ERROR")]
    Error,
    /// The modem answered `+CME ERROR: …`.
    #[error("the modem answered {0}")]
    Cme(CmeError),
    /// No final result code before the command's deadline.
    #[error("no answer within the command's timeout")]
    Timeout,
    /// The modem stopped answering; the command was not sent.
    #[error("the modem does not answer (probes unanswered)")]
    Unresponsive,
    /// The response had more than [`MAX_INFO_LINES`] information lines.
    #[error("the response had more than {MAX_INFO_LINES} information lines")]
    TooManyLines,
}

/// The queue of commands is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the AT command queue is full ({MAX_QUEUED} waiting)")]
pub struct QueueFull;

/// A command to send. `tag` comes back with its [`Completion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<T> {
    /// The command line without its terminator, e.g. `AT+CGATT=1`.
    pub text: String,
    /// The prefix of its information lines, when it shares one with a URC (`+CEREG:`).
    pub expect: Option<&'static str>,
    /// How long to wait for the final result code.
    pub timeout: Duration,
    /// The caller's name for it.
    pub tag: T,
}

/// A finished command: its information lines, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion<T> {
    /// The command's tag.
    pub tag: T,
    /// Information lines (in order) on `OK`.
    pub result: Result<Vec<String>, AtError>,
}

/// A change in the modem's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// [`PROBES_BEFORE_UNRESPONSIVE`] probes went unanswered.
    Unresponsive,
    /// A probe was answered after a timeout; commands run again.
    Recovered,
}

/// What the client counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Commands written.
    pub commands: u64,
    /// Commands that ended in a timeout.
    pub timeouts: u64,
    /// Probes written.
    pub probes: u64,
    /// Probes answered after a timeout.
    pub recoveries: u64,
    /// Final result codes that belonged to no command (late answers of timed-out commands).
    pub stale: u64,
    /// Information lines while no command was in flight.
    pub unexpected: u64,
    /// Echoed command lines ignored.
    pub echoes: u64,
    /// URCs taken out.
    pub urcs: u64,
    /// Lines with a URC prefix that did not parse.
    pub bad_urcs: u64,
    /// URCs dropped because [`MAX_URCS`] waited.
    pub urcs_dropped: u64,
}

#[derive(Debug)]
struct InFlight<T> {
    command: Command<T>,
    deadline: Instant,
    info: Vec<String>,
    too_many: bool,
}

#[derive(Debug)]
enum Phase<T> {
    Idle,
    Waiting(InFlight<T>),
    /// After a timeout: a probe is out; `answered` once its `+CFUN:` line came.
    Probing {
        deadline: Instant,
        unanswered: u32,
        answered: bool,
    },
}

/// The AT client of one modem. See the [module docs](self).
#[derive(Debug)]
pub struct AtClient<T> {
    reader: LineReader,
    queue: VecDeque<Command<T>>,
    phase: Phase<T>,
    unresponsive: bool,
    out: Vec<u8>,
    completions: VecDeque<Completion<T>>,
    urcs: VecDeque<Urc>,
    notices: VecDeque<Notice>,
    stats: ClientStats,
}

impl<T> Default for AtClient<T> {
    fn default() -> Self {
        AtClient {
            reader: LineReader::new(),
            queue: VecDeque::new(),
            phase: Phase::Idle,
            unresponsive: false,
            out: Vec::new(),
            completions: VecDeque::new(),
            urcs: VecDeque::new(),
            notices: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }
}

impl<T: Copy> AtClient<T> {
    /// A client with nothing sent.
    pub fn new() -> AtClient<T> {
        AtClient::default()
    }

    /// Queues `command`; it is written once the commands before it are done.
    pub fn send(&mut self, now: Instant, command: Command<T>) -> Result<(), QueueFull> {
        if self.queue.len() >= MAX_QUEUED {
            return Err(QueueFull);
        }
        self.queue.push_back(command);
        self.start_next(now);
        Ok(())
    }

    /// Takes bytes the modem wrote.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.reader.handle_bytes(bytes);
        while let Some(line) = self.reader.poll_line() {
            self.handle_line(now, &line);
        }
    }

    fn handle_line(&mut self, now: Instant, line: &str) {
        let expect = match &self.phase {
            Phase::Waiting(x) => x.command.expect,
            Phase::Probing { .. } => Some(PROBE_ANSWER),
            Phase::Idle => None,
        };
        match classify(line, expect) {
            Line::Echo => self.stats.echoes += 1,
            Line::BadUrc => self.stats.bad_urcs += 1,
            Line::Urc(urc) => {
                self.stats.urcs += 1;
                if self.urcs.len() >= MAX_URCS {
                    self.urcs.pop_front();
                    self.stats.urcs_dropped += 1;
                }
                self.urcs.push_back(urc);
            }
            Line::Info(text) => match &mut self.phase {
                Phase::Waiting(x) if x.info.len() < MAX_INFO_LINES => x.info.push(text.into()),
                Phase::Waiting(x) => x.too_many = true,
                Phase::Probing { answered, .. } => *answered |= text.starts_with(PROBE_ANSWER),
                Phase::Idle => self.stats.unexpected += 1,
            },
            Line::Final(code) => self.handle_final(now, code),
        }
    }

    fn handle_final(&mut self, now: Instant, code: Final) {
        match core::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Waiting(x) => {
                let result = match (code, x.too_many) {
                    (Final::Ok, false) => Ok(x.info),
                    (Final::Ok, true) => Err(AtError::TooManyLines),
                    (Final::Error, _) => Err(AtError::Error),
                    (Final::Cme(e), _) => Err(AtError::Cme(e)),
                };
                self.completions.push_back(Completion {
                    tag: x.command.tag,
                    result,
                });
            }
            Phase::Probing { answered: true, .. } => {
                self.stats.recoveries += 1;
                if core::mem::take(&mut self.unresponsive) {
                    self.notices.push_back(Notice::Recovered);
                }
            }
            probing @ Phase::Probing { .. } => {
                // The late answer of the command that timed out: not the probe's.
                self.stats.stale += 1;
                self.phase = probing;
                return;
            }
            Phase::Idle => {
                self.stats.stale += 1;
                return;
            }
        }
        self.start_next(now);
    }

    fn start_next(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        let Some(command) = self.queue.pop_front() else {
            return;
        };
        self.write_line(&command.text);
        self.stats.commands += 1;
        self.phase = Phase::Waiting(InFlight {
            deadline: now + command.timeout,
            command,
            info: Vec::new(),
            too_many: false,
        });
    }

    fn write_line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(b'\r');
    }

    /// Bytes to write to the modem, if any.
    #[must_use]
    pub fn poll_write(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| core::mem::take(&mut self.out))
    }

    /// When [`AtClient::handle_timeout`] is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting(x) => Some(x.deadline),
            Phase::Probing { deadline, .. } => Some(*deadline),
            Phase::Idle => None,
        }
    }

    /// Ends a command whose deadline passed and probes the modem (see the module docs).
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Waiting(x) if x.deadline <= now => {
                let tag = x.command.tag;
                self.stats.timeouts += 1;
                self.completions.push_back(Completion {
                    tag,
                    result: Err(AtError::Timeout),
                });
                // Whatever the modem had begun to write belongs to nothing now.
                self.reader.discard_partial();
                self.probe(now, 0);
            }
            Phase::Probing {
                deadline,
                unanswered,
                ..
            } if *deadline <= now => {
                let unanswered = *unanswered + 1;
                if unanswered >= PROBES_BEFORE_UNRESPONSIVE {
                    if !self.unresponsive {
                        self.unresponsive = true;
                        self.notices.push_back(Notice::Unresponsive);
                    }
                    for command in self.queue.drain(..) {
                        self.completions.push_back(Completion {
                            tag: command.tag,
                            result: Err(AtError::Unresponsive),
                        });
                    }
                }
                self.reader.discard_partial();
                self.probe(now, unanswered);
            }
            _ => {}
        }
    }

    fn probe(&mut self, now: Instant, unanswered: u32) {
        self.write_line(PROBE);
        self.stats.probes += 1;
        let wait = if self.unresponsive {
            UNRESPONSIVE_PROBE_EVERY
        } else {
            PROBE_TIMEOUT
        };
        self.phase = Phase::Probing {
            deadline: now + wait,
            unanswered,
            answered: false,
        };
    }

    /// The next finished command.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<Completion<T>> {
        self.completions.pop_front()
    }

    /// The next unsolicited result code.
    #[must_use]
    pub fn poll_urc(&mut self) -> Option<Urc> {
        self.urcs.pop_front()
    }

    /// The next change of the modem's health.
    #[must_use]
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Nothing in flight, nothing queued, nothing to write.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.queue.is_empty() && self.out.is_empty()
    }

    /// Commands queued behind the one in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// False after [`Notice::Unresponsive`] until [`Notice::Recovered`].
    pub fn is_responsive(&self) -> bool {
        !self.unresponsive
    }

    /// What the client counted.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// What the line reader counted.
    pub fn line_stats(&self) -> &LineStats {
        self.reader.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn command(text: &str, tag: u8) -> Command<u8> {
        Command {
            text: text.into(),
            expect: None,
            timeout: Duration::from_secs(1),
            tag,
        }
    }

    fn written(c: &mut AtClient<u8>) -> String {
        String::from_utf8(c.poll_write().unwrap_or_default()).unwrap()
    }

    fn completions(c: &mut AtClient<u8>) -> Vec<Completion<u8>> {
        core::iter::from_fn(|| c.poll_completion()).collect()
    }

    #[test]
    fn one_command_at_a_time_with_its_information_lines() {
        let mut c = AtClient::new();
        c.send(t(0), command("AT+NSOCR=DGRAM,17,5683,1", 1))
            .unwrap();
        c.send(t(0), command("AT+CGATT=1", 2)).unwrap();
        assert_eq!(written(&mut c), "AT+NSOCR=DGRAM,17,5683,1\r");
        c.handle_bytes(t(5), b"\r\n0\r\n\r\nOK\r\n");
        assert_eq!(written(&mut c), "AT+CGATT=1\r");
        c.handle_bytes(t(6), b"\r\n+CME ERROR: 30\r\n");
        assert_eq!(
            completions(&mut c),
            [
                Completion {
                    tag: 1,
                    result: Ok(vec!["0".into()])
                },
                Completion {
                    tag: 2,
                    result: Err(AtError::Cme(CmeError::Code(30)))
                }
            ]
        );
        assert!(c.is_idle());
    }

    /// A URC between a command's information line and its OK is taken out; the response is
    /// whole.
    #[test]
    fn a_urc_inside_a_response_is_taken_out() {
        let mut c = AtClient::new();
        c.send(t(0), command("AT+NSORF=0,4", 1)).unwrap();
        let _ = written(&mut c);
        c.handle_bytes(
            t(1),
            b"\r\n0,2001:DB8::1,5683,4,DEADBEEF,0\r\n\r\n+NSONMI: 0,12\r\n\r\n+CEREG: 1\r\n\r\nOK\r\n",
        );
        assert_eq!(
            completions(&mut c),
            [Completion {
                tag: 1,
                result: Ok(vec!["0,2001:DB8::1,5683,4,DEADBEEF,0".into()])
            }]
        );
        assert_eq!(
            c.poll_urc(),
            Some(Urc::DatagramWaiting {
                socket: 0,
                length: 12
            })
        );
        assert!(matches!(c.poll_urc(), Some(Urc::Registration(_))));
    }

    #[test]
    fn an_expected_prefix_is_the_answer_not_a_urc() {
        let mut c = AtClient::new();
        c.send(
            t(0),
            Command {
                expect: Some("+CEREG:"),
                ..command("AT+CEREG?", 1)
            },
        )
        .unwrap();
        c.handle_bytes(t(1), b"\r\n+CEREG: 4,1\r\nOK\r\n+CEREG: 2\r\n");
        assert_eq!(
            completions(&mut c)[0].result,
            Ok(vec!["+CEREG: 4,1".into()])
        );
        assert!(matches!(c.poll_urc(), Some(Urc::Registration(_))));
    }

    #[test]
    fn echo_is_ignored_and_stray_lines_are_counted() {
        let mut c = AtClient::new();
        c.handle_bytes(t(0), b"0,1\r\nOK\r\n");
        assert_eq!((c.stats().unexpected, c.stats().stale), (1, 1));
        c.send(t(0), command("ATE0", 1)).unwrap();
        c.handle_bytes(t(1), b"ATE0\r\r\nOK\r\n");
        assert_eq!(completions(&mut c)[0].result, Ok(vec![]));
        assert_eq!(c.stats().echoes, 1);
    }

    #[test]
    fn too_many_information_lines_end_in_an_error_not_a_growing_buffer() {
        let mut c = AtClient::new();
        c.send(t(0), command("AT+X", 1)).unwrap();
        for _ in 0..100 {
            c.handle_bytes(t(1), b"line\r\n");
        }
        c.handle_bytes(t(1), b"OK\r\n");
        assert_eq!(completions(&mut c)[0].result, Err(AtError::TooManyLines));
    }

    /// A modem that stops mid-command: the command times out, the late OK that follows the
    /// probe is not taken as an answer, the probe's own answer resumes the queue.
    #[test]
    fn a_timeout_probes_and_a_late_answer_is_never_matched_to_the_next_command() {
        let mut c = AtClient::new();
        c.send(t(0), command("AT+NSOST=0,2001:db8::1,5683,1,00", 1))
            .unwrap();
        c.send(t(0), command("AT+CGPADDR=1", 2)).unwrap();
        let _ = written(&mut c);
        c.handle_bytes(t(10), b"\r\n0,"); // begins its answer, then stops
        assert_eq!(c.poll_timeout(), Some(t(1000)));
        c.handle_timeout(t(1000));
        assert_eq!(completions(&mut c)[0].result, Err(AtError::Timeout));
        assert_eq!(written(&mut c), "AT+CFUN?\r");
        // The rest of the old answer arrives late: stale, dropped.
        c.handle_bytes(t(1100), b"1\r\n\r\nOK\r\n");
        assert_eq!(c.stats().stale, 1);
        assert!(
            c.poll_write().is_none(),
            "nothing sent until the probe answers"
        );
        c.handle_bytes(t(1200), b"\r\n+CFUN: 1\r\n\r\nOK\r\n");
        assert_eq!(written(&mut c), "AT+CGPADDR=1\r");
        c.handle_bytes(t(1300), b"+CGPADDR: 1,\"2001:DB8::7\"\r\nOK\r\n");
        assert_eq!(
            completions(&mut c),
            [Completion {
                tag: 2,
                result: Ok(vec!["+CGPADDR: 1,\"2001:DB8::7\"".into()])
            }]
        );
        assert_eq!((c.stats().timeouts, c.stats().recoveries), (1, 1));
    }

    /// A modem that never answers again: probes are bounded in rate, queued commands fail
    /// with a clear error instead of waiting forever, and the first answer recovers.
    #[test]
    fn a_dead_modem_is_reported_and_commands_fail_fast_until_it_answers() {
        let mut c = AtClient::new();
        c.send(t(0), command("AT+CGATT=1", 1)).unwrap();
        c.send(t(0), command("AT+CGPADDR=1", 2)).unwrap();
        assert_eq!(written(&mut c), "AT+CGATT=1\r");
        let mut now = t(0);
        let mut probes = 0;
        while c.poll_notice().is_none() {
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            if written(&mut c) == "AT+CFUN?\r" {
                probes += 1;
            }
            assert!(probes < 10);
        }
        // The probe after the timeout, then one after each unanswered one: the notice comes
        // with the probe after the third unanswered.
        assert_eq!(probes, PROBES_BEFORE_UNRESPONSIVE + 1);
        assert!(!c.is_responsive());
        let done = completions(&mut c);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].result, Err(AtError::Timeout));
        assert_eq!(done[1].result, Err(AtError::Unresponsive));
        // A command sent meanwhile fails at the next unanswered probe, within the probe period.
        c.send(now, command("AT+NSOCR=DGRAM,17,5683,1", 3)).unwrap();
        let next = c.poll_timeout().unwrap();
        assert_eq!(next - now, UNRESPONSIVE_PROBE_EVERY);
        c.handle_timeout(next);
        assert_eq!(completions(&mut c)[0].result, Err(AtError::Unresponsive));
        // The modem is back.
        let _ = written(&mut c);
        c.handle_bytes(next, b"+CFUN: 1\r\nOK\r\n");
        assert_eq!(c.poll_notice(), Some(Notice::Recovered));
        c.send(next, command("AT", 4)).unwrap();
        assert_eq!(written(&mut c), "AT\r");
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut c = AtClient::new();
        for i in 0..=MAX_QUEUED {
            c.send(t(0), command("AT", i as u8)).unwrap();
        }
        assert_eq!(c.queued(), MAX_QUEUED);
        assert_eq!(c.send(t(0), command("AT", 99)), Err(QueueFull));
    }
}
