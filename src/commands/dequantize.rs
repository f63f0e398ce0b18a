//! `gemma-fit dequantize`: a GGUF model as a dequantized Hugging Face folder.

use anyhow::Result;
use candle_core::DType;

use crate::cli::DequantizeArgs;
use crate::engine::load::export::gguf_to_hf;
use crate::engine::load::spec::ModelSpec;

pub fn run(args: &DequantizeArgs) -> Result<()> {
    let spec: ModelSpec = args.model.parse()?;
    let src = match spec {
        ModelSpec::Default | ModelSpec::Gguf(_) => spec.resolve(super::show_progress())?,
        other => anyhow::bail!("{other}: dequantize reads a GGUF file ('default' or a .gguf path)"),
    };
    let dtype = match args.dtype.as_str() {
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        _ => DType::F32,
    };
    let bar = crate::output::progress::steps(0, "tensors", super::show_progress());
    let done = gguf_to_hf(&src, &args.out, dtype, |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    })?;
    bar.finish_and_clear();
    let types: Vec<String> = done.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "wrote {} ({:.1} MiB of {} from {} tensors: {})",
        args.out.display(),
        crate::units::mib(done.bytes),
        args.dtype,
        done.types.values().sum::<usize>(),
        types.join(", ")
    );
    Ok(())
}
