//! Vision: the SigLIP tower agrees with candle-transformers' SigLIP, the projector pools, norms
//! and projects, image soft tokens attend to each other both ways (and only to each other), a
//! full-size tower yields 256 tokens of the text width, and `run --image` works end to end.

mod common;

use candle_core::{DType, Device, Tensor};
use common::tiny::*;
use gemma_fit::engine::decoder::Segment;
use gemma_fit::engine::kv_cache::{KvDtype, KvPair};
use gemma_fit::engine::load::format::Format;
use gemma_fit::engine::load::synthetic::SyntheticWeights;
use gemma_fit::engine::load::LoadedModel;
use gemma_fit::engine::vision::{self, VisionConfig, VisionTower};

fn tiny_multimodal() -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_hf_multimodal(dir.path());
    let m = LoadedModel::from_hf_dir(dir.path(), None, true, &Device::Cpu).unwrap();
    (dir, m)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn encoder_agrees_with_candle_transformers_siglip() {
    use candle_transformers::models::siglip;
    let (dir, m) = tiny_multimodal();
    let tower = m.vision.as_ref().expect("vision loaded");
    let pixels = vision::synthetic_image(V_IMAGE, 3, &Device::Cpu).unwrap();
    let ours = tower.encoder_output(&pixels).unwrap();
    assert_eq!(ours.dims(), [(V_IMAGE / V_PATCH).pow(2), V_HIDDEN]);

    let cfg = siglip::VisionConfig {
        hidden_size: V_HIDDEN,
        intermediate_size: V_FF,
        num_hidden_layers: V_LAYERS,
        num_attention_heads: V_HEADS,
        num_channels: 3,
        image_size: V_IMAGE,
        patch_size: V_PATCH,
        hidden_act: candle_nn::Activation::GeluPytorchTanh,
        layer_norm_eps: 1e-6,
    };
    let files = [dir.path().join("model.safetensors")];
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap()
    };
    let theirs = siglip::VisionModel::new(&cfg, false, vb.pp("vision_tower.vision_model")).unwrap();
    let reference = candle_core::Module::forward(&theirs, &pixels.unsqueeze(0).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let d = max_diff(&ours, &reference);
    assert!(d < 1e-4, "max |Δ| vs candle-transformers SigLIP: {d}");
}

/// The projector by hand: 2 × 2 average pool of the 8 × 8 grid, RMSNorm with 1 + w, x @ W.
#[test]
fn projector_pools_norms_and_projects() {
    let (_dir, m) = tiny_multimodal();
    let tower = m.vision.as_ref().unwrap();
    let pixels = vision::synthetic_image(V_IMAGE, 5, &Device::Cpu).unwrap();
    let enc: Vec<Vec<f32>> = tower.encoder_output(&pixels).unwrap().to_vec2().unwrap();
    let soft = tower.encode(&pixels).unwrap();
    assert_eq!(soft.dims(), [V_TOKENS, HIDDEN]);

    let named: std::collections::HashMap<String, Tensor> =
        hf_vision_tensors().into_iter().collect();
    let norm_w: Vec<f32> = named["multi_modal_projector.mm_soft_emb_norm.weight"]
        .to_vec1()
        .unwrap();
    let proj: Vec<Vec<f32>> = named["multi_modal_projector.mm_input_projection_weight"]
        .to_vec2()
        .unwrap();
    let (grid, side, k) = (V_IMAGE / V_PATCH, 4, 2);
    let mut want = Vec::new();
    for ty in 0..side {
        for tx in 0..side {
            let mut pooled = [0f32; V_HIDDEN];
            for dy in 0..k {
                for dx in 0..k {
                    let row = &enc[(ty * k + dy) * grid + tx * k + dx];
                    for (p, v) in pooled.iter_mut().zip(row) {
                        *p += v / (k * k) as f32;
                    }
                }
            }
            let rms = (pooled.iter().map(|v| v * v).sum::<f32>() / V_HIDDEN as f32 + 1e-6).sqrt();
            let normed: Vec<f32> = pooled
                .iter()
                .zip(&norm_w)
                .map(|(v, w)| v / rms * (1.0 + w))
                .collect();
            want.extend(
                (0..HIDDEN).map(|j| (0..V_HIDDEN).map(|i| normed[i] * proj[i][j]).sum::<f32>()),
            );
        }
    }
    let want = Tensor::from_vec(want, (V_TOKENS, HIDDEN), &Device::Cpu).unwrap();
    let d = max_diff(&soft, &want);
    assert!(d < 1e-4, "max |Δ| vs the projector by hand: {d}");
}

/// The cached key of layer 5 (global, so slot = position) at `pos` after prefilling `segments`:
/// it shows what the attention of layers 0-4 saw.
fn global_key(m: &LoadedModel, segments: &[Segment], chunk: usize, pos: usize) -> Tensor {
    let mut s = m.model.session(64, KvPair::both(KvDtype::F32)).unwrap();
    m.model.prefill_segments(segments, chunk, &mut s).unwrap();
    s.cache.layers[5]
        .k
        .narrow(pos, 1)
        .and_then(|k| k.to_f32())
        .and_then(|k| k.flatten_all())
        .unwrap()
}

#[test]
fn image_tokens_attend_to_each_other_both_ways() {
    let (_dir, m) = tiny_multimodal();
    let tower = m.vision.as_ref().unwrap();
    let soft = tower
        .encode(&vision::synthetic_image(V_IMAGE, 1, &Device::Cpu).unwrap())
        .unwrap();
    // The same image with its last soft token changed.
    let last = Tensor::ones((1, HIDDEN), DType::F32, &Device::Cpu).unwrap();
    let changed = Tensor::cat(&[&soft.narrow(0, 0, V_TOKENS - 1).unwrap(), &last], 0).unwrap();
    let text = [2u32, 17]; // BOS and a marker token, then the image at positions 2..18
    let after = [5u32, 9, 11];
    let segs = |img| {
        [
            Segment::Text(&text),
            Segment::Image(img),
            Segment::Text(&after),
        ]
    };
    let first_image_pos = text.len();
    // The first image token's key (layer 5) changes with the last image token: it saw it.
    let a = global_key(&m, &segs(&soft), 64, first_image_pos);
    let b = global_key(&m, &segs(&changed), 64, first_image_pos);
    assert!(
        max_diff(&a, &b) > 1e-3,
        "image tokens must see later image tokens"
    );
    // Text before the image does not see it.
    let a = global_key(&m, &segs(&soft), 64, 1);
    let b = global_key(&m, &segs(&changed), 64, 1);
    assert_eq!(max_diff(&a, &b), 0.0, "causal before the image");

    // Chunking never splits the image, and the result does not depend on it: chunks of 3 put
    // the image in a chunk of its own; chunks of 20 split the text after it.
    let logits = |chunk| {
        let mut s = m.model.session(64, KvPair::both(KvDtype::F32)).unwrap();
        m.model
            .prefill_segments(&segs(&soft), chunk, &mut s)
            .unwrap()
    };
    let one_shot = logits(64);
    for chunk in [3, 20] {
        assert_eq!(logits(chunk), one_shot, "chunk {chunk}");
    }
}

#[test]
fn full_size_tower_gives_256_tokens_of_the_text_width() {
    // Gemma 3 4B's tower and projector with exact shapes (896 × 896 image, 64 × 64 patches,
    // 1152 wide), one encoder layer instead of 27 to keep the test short.
    let cfg = VisionConfig {
        num_layers: 1,
        ..VisionConfig::gemma3()
    };
    let mut w = SyntheticWeights::new(
        Format::Plain(candle_core::quantized::GgmlDType::F16),
        0,
        11,
        &Device::Cpu,
    )
    .unwrap();
    let tower = VisionTower::load(cfg, 2560, &mut w).unwrap();
    // Matrices stay f16 (2 bytes per value); 1-D tensors are f32.
    let b = tower.weight_bytes;
    assert_eq!(b.resident_weight_bytes, b.file_weight_bytes);
    let pixels = vision::synthetic_image(896, 0, &Device::Cpu).unwrap();
    let soft = tower.encode(&pixels).unwrap();
    assert_eq!(soft.dims(), [256, 2560]);
    let v: Vec<f32> = soft.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(v.iter().any(|x| *x != 0.0));
}

#[test]
fn vision_weight_bytes_match_a_published_mmproj() {
    // llama.cpp's mmproj-model-f16.gguf for Gemma 3 4B: 851 MB (docs/gemma3.md §5); ours in f16 for
    // the same tensors (matrices f16, norms and biases f32) must be within 1%.
    let p = gemma_fit::engine::presets::find("4b").unwrap();
    let v = p.vision.as_ref().unwrap();
    let ours = gemma_fit::engine::load::synthetic::vision_weight_bytes(
        v,
        p.config.hidden_size,
        "q4_k_m"
            .parse::<gemma_fit::engine::load::format::Format>()
            .unwrap(),
    ) as f64;
    assert!((ours / 851e6 - 1.0).abs() < 0.01, "{ours}");
}

#[test]
fn vision_folders_quantize_and_fail_clearly() {
    // Quantized at load: text in Q8_0, the tower in F16 (llama.cpp's mmproj convention); encodes.
    let (dir, _) = tiny_multimodal();
    let m = LoadedModel::from_hf_dir(
        dir.path(),
        Some("q8_0".parse().unwrap()),
        true,
        &Device::Cpu,
    )
    .unwrap();
    let tower = m.vision.as_ref().unwrap();
    let b = tower.weight_bytes;
    assert!(b.resident_weight_bytes < b.file_weight_bytes, "{b:?}");
    let soft = tower
        .encode(&vision::synthetic_image(V_IMAGE, 0, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(soft.dims(), [V_TOKENS, HIDDEN]);

    // A missing vision tensor is named with the folder.
    let mut map: std::collections::HashMap<String, Tensor> = hf_tensors_with_vocab(MM_VOCAB)
        .into_iter()
        .map(|(n, t)| (format!("language_model.{n}"), t))
        .collect();
    let gone = "vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight";
    map.extend(hf_vision_tensors().into_iter().filter(|(n, _)| n != gone));
    candle_core::safetensors::save(&map, dir.path().join("model.safetensors")).unwrap();
    let e = LoadedModel::from_hf_dir(dir.path(), None, true, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(gone) && e.contains("missing"), "{e}");
    // Without --image the tower is not read at all, so the text model still loads.
    assert!(LoadedModel::from_hf_dir(dir.path(), None, false, &Device::Cpu).is_ok());

    // A text-only folder has no tower.
    let text_only = tempfile::tempdir().unwrap();
    write_hf(text_only.path());
    let e = LoadedModel::from_hf_dir(text_only.path(), None, true, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no vision tower"), "{e}");
}
