//! The `settings!` macro: one entry per setting (key, type, default, flag, variable, help,
//! documentation) generates the `Config` struct and its `Default`, the clap arguments of
//! `runai` (`SettingArgs`, every field optional so only what was given overrides the file)
//! and the table that `config/default.toml` and the README's flag table are printed from.
//! How each value type becomes a clap argument lives here too (`SettingValue`).

use clap::{value_parser, Arg, ArgAction, ArgMatches};

use crate::net::secret::Secret;

/// How one setting's type is read from the command line and shown as a default.
pub(crate) trait SettingValue: Sized + Clone {
    /// Sets the action, parser and value name of the setting's flag (an entry's own
    /// `cli .value_name(..)` overrides the name).
    fn configure(arg: Arg) -> Arg;
    /// The value given on the command line or in the environment, if any.
    fn given(matches: &ArgMatches, id: &str) -> Option<Self>;
    /// The default as `--help` and the README show it; `None` shows nothing.
    fn shown(&self) -> Option<String>;
}

macro_rules! scalar_setting {
    ($($ty:ty => $value_name:literal),*) => {$(
        impl SettingValue for $ty {
            fn configure(arg: Arg) -> Arg {
                arg.action(ArgAction::Set)
                    .value_parser(value_parser!($ty))
                    .value_name($value_name)
            }
            fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
                matches.get_one::<$ty>(id).cloned()
            }
            fn shown(&self) -> Option<String> {
                let text = self.to_string();
                (!text.is_empty()).then_some(text)
            }
        }
    )*};
}

// Every fractional setting is a duration in seconds.
scalar_setting!(String => "TEXT", u16 => "N", u32 => "N", u64 => "N", usize => "N", f64 => "SECS");

impl SettingValue for Secret {
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Set)
            .value_parser(value_parser!(Secret))
            .value_name("TOKEN")
            .hide_env_values(true)
    }
    fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
        matches.get_one::<Secret>(id).cloned()
    }
    fn shown(&self) -> Option<String> {
        None
    }
}

/// An optional port: unset in the file means off; the flag sets it.
impl SettingValue for Option<u16> {
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Set)
            .value_parser(value_parser!(u16))
            .value_name("PORT")
    }
    fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
        matches.get_one::<u16>(id).copied().map(Some)
    }
    fn shown(&self) -> Option<String> {
        self.map(|p| p.to_string())
    }
}

/// A switch: giving the flag turns the setting on; it cannot turn a file's `true` off.
impl SettingValue for bool {
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::SetTrue)
    }
    fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
        matches.get_flag(id).then_some(true)
    }
    fn shown(&self) -> Option<String> {
        Some(if *self { "on" } else { "off" }.to_string())
    }
}

/// A list: the flag repeats (or its entry sets a delimiter); given at all, it replaces the
/// file's whole list.
impl SettingValue for Vec<String> {
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_parser(value_parser!(String))
            .value_name("LIST")
    }
    fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
        let values: Vec<String> = matches.get_many::<String>(id)?.cloned().collect();
        (!values.is_empty()).then_some(values)
    }
    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(", "))
    }
}

/// One setting as the generated documentation needs it.
#[derive(Debug, Clone)]
pub(crate) struct SettingDoc {
    /// The config file key (and the `Config` field).
    pub key: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// One line for `--help` and the README.
    pub help: &'static str,
    /// The config file's comment, one string a line.
    pub doc: &'static [&'static str],
    /// The default as shown to people (`--help`, README); `None` shows nothing.
    pub shown: Option<String>,
}

/// `--help` text of a setting: its line and its default.
pub(crate) fn help_line(help: &str, shown: Option<&str>) -> String {
    match shown {
        Some(s) => format!("{help} [default: {s}]"),
        None => help.to_string(),
    }
}

/// Declares every setting once. Each entry:
///
/// ```text
/// /// Comment lines of config/default.toml (and the field's rustdoc).
/// key: Type = default_expr, flag "long-flag", env "RUNAI_VAR", help "One line for --help",
///     [old_key "alias",] [shown "default as shown",] [cli .more().clap(builder_calls)];
/// ```
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident : $ty:ty = $default:expr,
        flag $flag:literal, env $env:literal, help $help:literal
        $(, old_key $old:literal)?
        $(, shown $shown:literal)?
        $(, cli $(.$call:ident($($arg:expr),*))+)?
        ;
    )*) => {
        /// Every setting of the server. Field names are the config file keys.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                $(#[serde(alias = $old)])?
                pub $key: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($key: $default,)* }
            }
        }

        /// The settings as command-line flags and `RUNAI_*` variables; only what was given
        /// is `Some`, and it overrides the config file.
        #[derive(Debug, Clone, Default)]
        pub struct SettingArgs {
            $(pub $key: Option<$ty>,)*
        }

        impl SettingArgs {
            /// Puts every given value over `config`.
            pub fn apply(&self, config: &mut Config) {
                $(if let Some(v) = &self.$key {
                    config.$key = v.clone();
                })*
            }
        }

        impl clap::FromArgMatches for SettingArgs {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok(SettingArgs {
                    $($key: <$ty as $crate::config::declare::SettingValue>::given(
                        m,
                        stringify!($key),
                    ),)*
                })
            }
            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                let given = Self::from_arg_matches(m)?;
                $(if given.$key.is_some() {
                    self.$key = given.$key;
                })*
                Ok(())
            }
        }

        impl clap::Args for SettingArgs {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                cmd $(.arg({
                    let arg = clap::Arg::new(stringify!($key))
                        .long($flag)
                        .env($env)
                        .help($crate::config::declare::help_line(
                            $help,
                            shown::$key().as_deref(),
                        ));
                    <$ty as $crate::config::declare::SettingValue>::configure(arg)
                        $($(.$call($($arg),*))+)?
                }))*
            }
            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }

        /// Each setting's default as shown to people.
        mod shown {
            #[allow(unused_imports)]
            use super::*;
            $(
                pub(super) fn $key() -> Option<String> {
                    let given: &[&str] = &[$($shown)?];
                    match given.first() {
                        Some(s) => Some(s.to_string()),
                        None => <$ty as $crate::config::declare::SettingValue>::shown(
                            &super::Config::default().$key,
                        ),
                    }
                }
            )*
        }

        /// Every setting in declaration order, for the generated documentation.
        pub(crate) fn setting_docs() -> Vec<$crate::config::declare::SettingDoc> {
            vec![$($crate::config::declare::SettingDoc {
                key: stringify!($key),
                flag: $flag,
                help: $help,
                doc: &[$($doc),*],
                shown: shown::$key(),
            }),*]
        }
    };
}

pub(crate) use settings;
