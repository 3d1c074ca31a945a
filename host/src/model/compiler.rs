//! Which compiler turns a guest into machine code: Cranelift (optimizing) or Winch
//! (baseline). The two never share an engine, an artifact or a store.

/// Which compiler turns a component into machine code.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// Optimizing: the fastest code, the slowest compile.
    #[default]
    Cranelift,
    /// Baseline: compiles several times faster, runs slower. Fuel is charged per
    /// instruction at a flat rate, so fuel figures differ from Cranelift's.
    Winch,
}

impl std::fmt::Display for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compiler::Cranelift => "cranelift",
            Compiler::Winch => "winch",
        })
    }
}
