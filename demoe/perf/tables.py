"""The tables ``demoe-eval perf`` prints: (title, rows of strings, columns)."""

Table = tuple[str, list[dict], list[str]]


def display_tables(results: dict) -> list[Table]:
    """The printed tables, one for each part of ``results`` that was measured."""
    variants = results["config"]["precisions"] + (
        ["compiled"] if "compiled_ms" in results["forward"][0] else []
    )
    tables = [forward_table(results, variants)]
    if results["scaling"]:
        tables.append(scaling_table(results["scaling"], variants))
    if results["large_image"]:
        tables.append(large_image_table(results["large_image"]))
    if results.get("pipeline"):
        tables.append(pipeline_table(results["pipeline"]))
    if results.get("bf16_quality"):
        tables.append(bf16_table(results["bf16_quality"]))
    if results.get("training_step"):
        tables.append(training_table(results["training_step"]))
    return tables


def forward_table(results: dict, variants: list[str]) -> Table:
    rows = []
    for r in results["forward"]:
        row = {
            "size": r["size"],
            "batch": r["batch"],
            "k": r["k"],
            "reference ms": f"{r['reference_ms']:.1f}",
        }
        for v in variants:
            row[f"{v} ms"] = f"{r[f'{v}_ms']:.1f}"
            row[f"{v} x"] = f"{r[f'{v}_speedup']:.2f}"
            row[f"{v} diff"] = f"{r[f'{v}_max_rel_diff']:.1e}"
        if "compiled_first_call_s" in r:
            row["compile s"] = f"{r['compiled_first_call_s']:.1f}"
        if "moe_overhead" in r:
            row["k1 / dense"] = f"{r['moe_overhead']:.3f}"
        rows.append(row)
    columns = ["size", "batch", "k", "reference ms"]
    columns += [f"{v} {c}" for v in variants for c in ("ms", "x", "diff")] + ["k1 / dense"]
    if "compiled" in variants:
        columns.append("compile s")
    title = (
        f"Forward, {results['environment']['threads']} threads, medians of {results['config']['repeats']} "
        "rounds (x: reference / ours; diff: max |ours - reference| / max |reference|; "
        "k1 / dense: MoE at k=1 against the dense network of the same path)"
    )
    return title, rows, columns


def scaling_table(scaling: list[dict], variants: list[str]) -> Table:
    names = ["reference", *variants]
    rows = [
        {
            "batch": r["batch"],
            "k": r["k"],
            "pixels x": f"{r['pixel_ratio']:.1f}",
            **{f"{name} time x": f"{r[name]:.2f}" for name in names},
        }
        for r in scaling
    ]
    sizes = scaling[0]["sizes"]
    columns = ["batch", "k", "pixels x", *(f"{n} time x" for n in names)]
    return f"Cost against size: time({sizes[1]}) / time({sizes[0]})", rows, columns


def large_image_table(large_image: dict) -> Table:
    rows = [
        {
            "image": f"{r['size'][1]}x{r['size'][0]}",
            "tile": f"{r['tile']}/{r['overlap']}",
            "attention": attention,
            "tiles": r["tiles"],
            "seconds": f"{r['seconds']:.1f}",
            "peak RSS GB": f"{r['peak_rss_bytes'] / 2**30:.2f}",
        }
        for attention, r in large_image.items()
    ]
    return "Large image in tiles, fp32, in a fresh process", rows, list(rows[0])


def pipeline_table(pipeline: dict) -> Table:
    rows = [
        {
            "precision": precision,
            "images": r["images"],
            "modes": ",".join(r["modes"]),
            "pure forward s": f"{r['pure_forward_seconds']:.2f}",
            "evaluator forward s": f"{r['evaluator_forward_seconds']:.2f}",
            "loop s": f"{r['loop_seconds']:.2f}",
            "loop / forward": f"{r['loop_over_forward']:.2f}",
            "loop / own forward": f"{r['loop_over_own_forward']:.2f}",
            "img/s": f"{r['images_per_second']:.2f}",
            "setup s": f"{r['setup_seconds']:.1f}",
            "finish s": f"{r['finish_seconds']:.1f}",
        }
        for precision, r in pipeline.items()
    ]
    title = (
        "Evaluator on aio-synth against the pure forwards of the same images "
        "(loop: decoding, every mode, metrics, records; setup and finish are paid once per run)"
    )
    return title, rows, list(rows[0])


def bf16_table(quality: dict) -> Table:
    row = {
        "images": quality["images"],
        "psnr fp32": f"{quality['psnr_fp32']:.4f}",
        "psnr bf16": f"{quality['psnr_bf16']:.4f}",
        "change dB": f"{quality['psnr_change_db']:+.4f}",
    }
    return f"bf16 against fp32: {quality['model']} on aio-synth, auto routing", [row], list(row)


def training_table(training: dict) -> Table:
    row = {
        "contiguous s": f"{training['contiguous_seconds']:.3f}",
        "channels_last s": f"{training['channels_last_seconds']:.3f}",
        "x": f"{training['speedup']:.2f}",
    }
    title = (
        f"Training step (forward and backward) of {training['model']}'s architecture, "
        f"{training['batch']} crops of {training['crop']}x{training['crop']}, per train.memory_format"
    )
    return title, [row], list(row)
