//! Synthetic weights: exact shapes in the target format, weight bytes as a GGUF file holds them,
//! and a model that runs.

use candle_core::Device;
use gemma_fit::engine::generate::argmax;
use gemma_fit::engine::kv_cache::{KvDtype, KvPair};
use gemma_fit::engine::load::LoadedModel;
use gemma_fit::engine::presets;

#[test]
fn weight_bytes_are_what_a_gguf_file_holds() {
    let m =
        LoadedModel::synthetic("270m", "q8_0".parse().unwrap(), 7, false, &Device::Cpu).unwrap();
    let c = &m.model.cfg;
    let params = presets::find("270m").unwrap().params();
    // Norm weights stay f32 (4 bytes); every 2-D weight is Q8_0 (34 bytes per 32 values).
    let norms = (c.num_layers * (4 * c.hidden_size + 2 * c.head_dim) + c.hidden_size) as u64;
    let matrices = params.text - norms;
    assert_eq!(
        m.model.weight_bytes.file_weight_bytes,
        matrices / 32 * 34 + norms * 4
    );
    assert_eq!(
        m.model.weight_bytes.resident_weight_bytes,
        m.model.weight_bytes.file_weight_bytes
    );
}

#[test]
fn k_quants_fall_back_like_llama_cpp_on_short_rows() {
    // 270M rows are 640 wide (not a multiple of 256): Q4_K falls back to Q5_0 for them, which
    // the CPU engine holds as Q8_0; ffn_down rows (2048 wide) stay Q4_K.
    let m =
        LoadedModel::synthetic("270m", "q4_k".parse().unwrap(), 7, false, &Device::Cpu).unwrap();
    assert!(m
        .model
        .repacked
        .iter()
        .any(|(n, from, to)| n == "blk.0.ffn_up.weight" && from == "Q5_0" && to == "Q8_0"));
    assert!(!m
        .model
        .repacked
        .iter()
        .any(|(n, _, _)| n.ends_with("ffn_down.weight")));
    let b = m.model.weight_bytes;
    assert!(b.resident_weight_bytes > b.file_weight_bytes);
}

#[test]
fn a_synthetic_model_runs_and_is_self_consistent() {
    let m =
        LoadedModel::synthetic("270m", "q6_k".parse().unwrap(), 3, false, &Device::Cpu).unwrap();
    assert!(m.tokenizer.is_none());
    let p = gemma_fit::measure::pass::prompt(&m, 40);
    let mut one = m.model.session(41, KvPair::both(KvDtype::F32)).unwrap();
    let whole = m.model.prefill(&p, 512, &mut one).unwrap();
    assert!(whole.iter().all(|x| x.is_finite()));
    let mut two = m.model.session(41, KvPair::both(KvDtype::F32)).unwrap();
    let chunked = m.model.prefill(&p, 7, &mut two).unwrap();
    assert_eq!(whole, chunked);
    let next = m.model.forward(&[argmax(&whole)], &mut one).unwrap();
    assert!(next.iter().all(|x| x.is_finite()));
}

#[test]
fn unsupported_formats_are_refused_clearly() {
    // A format is parsed where it is named (`--quant`, a suite's axis), before any weights.
    let err = "iq2_xs"
        .parse::<gemma_fit::engine::load::format::Format>()
        .unwrap_err();
    assert!(
        err.contains("unknown weight format 'iq2_xs'") && err.contains("q4_k_m"),
        "{err}"
    );
}

fn gguf_cfg(size: &str) -> gemma_fit::engine::config::Gemma3Config {
    let mut c = presets::find(size).unwrap().config;
    c.vocab_size = 262_144;
    c
}

/// Within 1% of the published files (GGUF, and safetensors for bf16 270M; docs/gemma3.md §6; the files add a few MB of
/// metadata and vocabulary).
#[test]
fn mixes_match_published_file_sizes() {
    use gemma_fit::engine::load::synthetic::file_weight_bytes;
    // GGUF files of 270M hold 6,525,120 bytes of metadata (mostly the vocabulary: the default
    // file's size minus its tensors), 2.6% of the whole at that size; subtracted below.
    const META_270M: f64 = 6_525_120.0;
    let published = [
        ("q4_k_m", "270m", 253_113_024.0 - META_270M), // the default file itself
        ("q8_0", "270m", 292e6 - META_270M), // ggml-org/gemma-3-270m-GGUF (recalled, UNVERIFIED)
        ("bf16", "270m", 536e6),             // google/gemma-3-270m model.safetensors
        ("bf16", "1b", 2.0e9),               // tech report Table 3
        ("f16", "4b", 7.77e9),               // docs/gemma3.md §6 (F16 GGUF; bf16 is the same size)
        ("bf16", "12b", 23.5e9),
        ("bf16", "27b", 54e9),
        ("q4_k_m", "1b", 0.806e9),
        ("q4_k_m", "4b", 2.49e9),
        ("q4_k_m", "12b", 7.3e9),
        ("q4_k_m", "27b", 16.5e9),
        ("q8_0", "1b", 1.07e9),
        ("q8_0", "4b", 4.13e9),
        ("q8_0", "12b", 12.5e9),
        ("q8_0", "27b", 28.7e9),
        ("qat_q4_0", "27b", 17.2e9),
    ];
    for (format, size, bytes) in published {
        let ours = file_weight_bytes(
            &gguf_cfg(size),
            format
                .parse::<gemma_fit::engine::load::format::Format>()
                .unwrap(),
        ) as f64;
        let err = (ours - bytes) / bytes;
        assert!(
            err.abs() < 0.01,
            "{size} {format}: {ours:.4e} vs published {bytes:.4e} ({:+.2}%)",
            err * 100.0
        );
    }
}

/// The plan and the loader read the same tensors in the same types.
#[test]
fn loader_and_plan_agree() {
    use gemma_fit::engine::load::synthetic::file_weight_bytes;
    for format in ["q4_k_m", "qat_q4_0", "bf16"] {
        let m = LoadedModel::synthetic("270m", format.parse().unwrap(), 1, false, &Device::Cpu)
            .unwrap();
        assert_eq!(
            m.model.weight_bytes.file_weight_bytes,
            file_weight_bytes(
                &m.model.cfg,
                format
                    .parse::<gemma_fit::engine::load::format::Format>()
                    .unwrap()
            ),
            "{format}"
        );
    }
}

/// bf16/f16 weights stay two bytes per value in memory on the CPU.
#[test]
fn dense_16_bit_weights_stay_16_bit() {
    for format in ["bf16", "f16"] {
        let m = LoadedModel::synthetic("270m", format.parse().unwrap(), 1, false, &Device::Cpu)
            .unwrap();
        let b = m.model.weight_bytes;
        assert_eq!(b.resident_weight_bytes, b.file_weight_bytes, "{format}");
        let p = gemma_fit::measure::pass::prompt(&m, 20);
        let mut s = m.model.session(20, KvPair::both(KvDtype::F32)).unwrap();
        assert!(m
            .model
            .prefill(&p, 512, &mut s)
            .unwrap()
            .iter()
            .all(|x| x.is_finite()));
    }
}
