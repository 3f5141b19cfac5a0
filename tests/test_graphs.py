"""The whole model on a GPU with every op on its kernel (the `narrow` preset: published head sizes at toy width),
and the CUDA-graph decode: bf16 GPU vs the fp32 CPU model teacher-forced, graph replay == eager decode bit for bit
(padded buckets too), generate with and without graphs identical (penalties and sampling inside the graphs too),
batches beyond the largest bucket eager, clear errors."""

from __future__ import annotations

import pytest
import torch

from qwen3next_cuda import Qwen3NextCUDA, graphs
from qwen3next_cuda.sampling import Sampler, SamplingParams
from qwen3next_cuda.tools.make_checkpoint import preset_config, random_weights
from utils import calc_diff, prompts

cuda = pytest.mark.cuda


@pytest.fixture(scope="module")
def gpu(narrow) -> Qwen3NextCUDA:
    return Qwen3NextCUDA.from_pretrained(narrow, progress=False)


def twin_caches(model, batch, max_batch, max_len=64):
    """Two caches of ``max_batch`` slots, each with the prompts of ``batch`` prefilled: [(cache, slots)] * 2, one
    for graph replays, one for eager steps."""
    twins = []
    for _ in range(2):
        cache = model.new_cache(max_batch, max_len)
        slots = [cache.allocate(max_len) for _ in batch]
        model.prefill(batch, slots, cache)
        twins.append((cache, slots))
    return twins


def assert_same_caches(a, b):
    assert a.lengths == b.lengths
    for name in ("key", "value", "conv", "recurrent"):
        for layer, tensor in getattr(a, name).items():
            assert torch.equal(tensor, getattr(b, name)[layer]), f"{name}[{layer}] differs"


@cuda
def test_every_decode_op_has_a_kernel(gpu):
    assert graphs.capturable(gpu)


@cuda
def test_teacher_forced_bf16_gpu_tracks_fp32_cpu():
    """64 teacher-forced decode steps after a prompt: per-step logits cosine >= 0.999, top-1 agreement >= 99%.

    Random weights need two allowances a trained model does not. Every expert is routed to (top-k = all 16):
    a random router puts near-ties between the k-th and k+1-th expert on many tokens, a bf16 rounding swaps
    them, and a swap moves the output by a whole expert (the bf16 reference ops on the CPU then reach a cosine
    of 0.992 only). And the logits of a random lm_head over 151936 tokens are nearly flat: the top two are often
    within one bf16 step of each other, a tie in the logits' own precision, so a token counts as agreeing
    when its fp32 logit is within one bf16 step of the fp32 maximum."""
    config = preset_config("narrow")
    config.num_experts_per_tok = config.num_experts
    weights = random_weights(config, seed=3)
    gpu = Qwen3NextCUDA(config, {name: w.to("cuda") for name, w in weights.items()})
    cpu = Qwen3NextCUDA(config, {name: w.float() for name, w in weights.items()})
    (prompt,) = prompts([20], seed=1, vocab=150000)
    forced = prompts([64], seed=2, vocab=150000)[0]
    results = []
    for model in (gpu, cpu):
        cache = model.new_cache(1, 100)
        slot = cache.allocate(100)
        model.prefill([prompt], [slot], cache)
        steps = [model.decode(torch.tensor([token]), [slot], cache).float().cpu() for token in forced]
        results.append(torch.cat(steps))
    logits, expected = results
    cosines = [1 - calc_diff(a, b) for a, b in zip(logits, expected)]
    assert min(cosines) >= 0.999, f"worst step cosine {min(cosines):.5f}"
    best = expected.max(-1).values
    chosen = expected.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
    agree = chosen >= best - torch.finfo(torch.bfloat16).eps * best.abs()
    assert agree.float().mean() >= 0.99, f"top-1 agreement {agree.float().mean():.3f}"


@cuda
def test_graph_replay_matches_eager_decode(gpu):
    (graph_cache, graph_slots), (eager_cache, eager_slots) = twin_caches(gpu, prompts([7, 30, 3], seed=4,
                                                                                      vocab=150000), max_batch=3)
    decode_graphs = graphs.DecodeGraphs(gpu, graph_cache)
    assert decode_graphs.buckets == [1, 2, 3]
    tokens = torch.tensor([11, 12, 13], device="cuda")
    for step in range(6):
        active = 3 if step < 3 else 2  # the bucket changes as sequences finish
        replayed = decode_graphs.decode(tokens[:active], graph_slots[:active]).clone()
        eager = gpu.decode(tokens[:active], eager_slots[:active], eager_cache)
        assert torch.equal(replayed, eager), f"step {step}: replay differs from eager"
        tokens = eager.argmax(-1).repeat(2)[:3]
    assert_same_caches(graph_cache, eager_cache)


@cuda
def test_padded_bucket_replay_tracks_eager(gpu):
    """3 sequences in a 4-slot cache replay bucket 4, its last row padding (slot -1): each step's logits equal
    eager decode's, and so do the caches (the free slot untouched) and the penalised sampler's masks, which the
    graph updates through its padding row too (the spare row)."""
    batch = prompts([9, 4, 21], seed=10, vocab=150000)
    (graph_cache, graph_slots), (eager_cache, eager_slots) = twin_caches(gpu, batch, max_batch=4)
    params = SamplingParams(repetition_penalty=1.3, presence_penalty=0.5)
    samplers = [Sampler(params, gpu.config.vocab_size, 4, "cuda") for _ in range(2)]
    for sampler, slots in zip(samplers, (graph_slots, eager_slots)):
        for slot, prompt in zip(slots, batch):
            sampler.start(slot, prompt)
    decode_graphs = graphs.DecodeGraphs(gpu, graph_cache, sampler=samplers[0])
    assert decode_graphs.buckets == [1, 2, 4]
    tokens = torch.tensor([21, 22, 23], device="cuda")
    for step in range(5):
        replayed = decode_graphs.decode(tokens, graph_slots).clone()  # the replay samples and marks too
        eager = gpu.decode(tokens, eager_slots, eager_cache)
        assert torch.equal(replayed, eager), f"step {step}: replay differs from eager"
        tokens = samplers[1](eager, torch.tensor(eager_slots, dtype=torch.int32, device="cuda"))
        for mask in ("seen", "generated"):
            assert torch.equal(getattr(samplers[0], mask)[:4], getattr(samplers[1], mask)[:4]), \
                f"step {step}: {mask} differs"
    assert_same_caches(graph_cache, eager_cache)


@cuda
def test_generate_with_graphs_matches_eager(gpu):
    batch = prompts([5, 17], seed=5, vocab=150000)
    with_graphs = gpu.generate(batch, 12, do_sample=False, eos_token_id=[], cuda_graphs=True)
    eager = gpu.generate(batch, 12, do_sample=False, eos_token_id=[], cuda_graphs=False)
    assert torch.equal(with_graphs, eager)


@cuda
def test_sampling_inside_the_graphs_matches_eager(gpu):
    """Seeded sampling: the graphs draw from the registered generator as the eager steps do."""
    batch = prompts([6, 9], seed=8, vocab=150000)
    options = dict(do_sample=True, temperature=0.8, top_p=0.9, top_k=50, eos_token_id=[], seed=123)
    assert torch.equal(gpu.generate(batch, 10, cuda_graphs=True, **options),
                       gpu.generate(batch, 10, cuda_graphs=False, **options))


@cuda
@pytest.mark.parametrize("lengths,options", [
    ([5, 17, 2, 11], dict(do_sample=False)),  # greedy: 4 prompts, so that a batch of 3 replays bucket 4, padded
    # seeded: 3 prompts, so that every batch fills its bucket (a padded bucket draws noise for its padding rows,
    # where the eager step draws none)
    ([5, 17, 2], dict(do_sample=True, temperature=0.8, top_p=0.9, top_k=50, seed=321)),
], ids=["greedy", "seeded"])
def test_penalised_sampling_inside_the_graphs_matches_eager(gpu, lengths, options):
    """Repetition and presence penalties applied inside the graphs, by cache slot, as sequences end at their own
    stop tokens and the batch shrinks: the same tokens as eager steps."""
    batch = prompts(lengths, seed=9, vocab=150000)
    options = dict(repetition_penalty=1.3, presence_penalty=0.5, **options)
    free = gpu.generate(batch, 12, eos_token_id=[], cuda_graphs=False, **options)[:, -12:]
    stops = [int(free[0, 2]), int(free[1, 5])]  # row 0 ends by its 3rd token, the others later or not at all

    def generate(cuda_graphs):
        counts = [0] * len(batch)

        def count(index, token):
            counts[index] += 1
        return gpu.generate(batch, 12, eos_token_id=stops, cuda_graphs=cuda_graphs, streamer=count,
                            **options), counts
    (with_graphs, graph_counts), (eager, eager_counts) = generate(True), generate(False)
    assert torch.equal(with_graphs, eager) and graph_counts == eager_counts
    assert len(set(eager_counts)) > 1, f"every sequence ended at the same step: {eager_counts}"


@cuda
def test_batches_beyond_the_largest_bucket_run_eagerly(gpu):
    cache = gpu.new_cache(3, 32)
    slots = [cache.allocate(32) for _ in range(3)]
    gpu.prefill(prompts([4, 4, 4], seed=7, vocab=150000), slots, cache)
    decode_graphs = graphs.DecodeGraphs(gpu, cache, buckets=(1, 2))
    logits = decode_graphs.decode(torch.tensor([1, 2, 3], device="cuda"), slots)
    assert logits.shape == (3, gpu.config.vocab_size) and cache.lengths[slots[0]] == 5
    with pytest.raises(ValueError, match="repeat"):
        decode_graphs.decode(torch.tensor([1, 2], device="cuda"), [slots[0], slots[0]])
