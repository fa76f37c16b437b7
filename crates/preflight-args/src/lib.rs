//! Command-line options that `preflight-agent` and `preflight` share, as clap types: the
//! benchmark options ([`bench`]) and the output language ([`LangArg`]). The rendering itself
//! (`preflight-render`) knows no clap; a binary converts these into its values.

pub mod bench;

/// `--lang`: language of human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LangArg {
    /// English.
    #[default]
    En,
    /// Chinese (中文).
    Zh,
}

impl From<LangArg> for preflight_render::Lang {
    fn from(l: LangArg) -> Self {
        match l {
            LangArg::En => preflight_render::Lang::En,
            LangArg::Zh => preflight_render::Lang::Zh,
        }
    }
}
