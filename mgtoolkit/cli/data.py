"""``mgtoolkit data``: generate, import and inspect datasets."""

from __future__ import annotations

import argparse

from mgtoolkit.cli._options import add_scheduler_option

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="generate, import and inspect datasets")
    sub = parser.add_subparsers(title="data commands", metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="generate a multilevel diffusivity dataset (zarr store) on dask",
        description="Generate ν fields of a coefficient family at several levels. Rerunning the "
        "same command after an interruption fills in only the missing samples.",
    )
    gen.add_argument("--dim", type=int, required=True, help="2 or 3")
    gen.add_argument("--resolution", type=int, required=True, help="finest cells per side (2^k)")
    gen.add_argument("--levels", type=int, default=1, help="number of levels (default 1)")
    gen.add_argument("--samples", type=int, required=True, help="number of fields")
    gen.add_argument("--seed", type=int, default=0, help="Sobol seed for ω (default 0)")
    gen.add_argument("--family", default="kl", help="coefficient family (default kl)")
    gen.add_argument(
        "--repair",
        action="store_true",
        help="read every stored ν first and rewrite the damaged samples (see `data verify`)",
    )
    _common(gen)
    gen.set_defaults(run=_generate)

    imp = sub.add_parser(
        "import",
        help="store user voxel arrays (.npy or zarr) as a multilevel dataset",
        description="Coarse levels are geometric means of the 2^d children of each cell.",
    )
    imp.add_argument("input", help="a .npy file, a zarr array, or a zarr group (see --variable)")
    imp.add_argument("--variable", default="nu", help="array name inside a zarr group (nu)")
    imp.add_argument("--levels", type=int, default=1, help="number of levels (default 1)")
    imp.add_argument("--dim", type=int, default=None, help="2 or 3 when the rank is ambiguous")
    _common(imp)
    imp.set_defaults(run=_import)

    info = sub.add_parser("info", help="summarise a dataset store")
    info.add_argument("store", help="path of the store")
    info.set_defaults(run=_info)

    ver = sub.add_parser(
        "verify",
        help="read every chunk of a store and report damaged samples",
        description="Decode every chunk of every complete sample (checksums, NaN/inf, ν > 0, "
        "0 ≤ u_fem ≤ 1) and list damaged samples by level, variable and index; the result is "
        "recorded in the store (see `data info`). Exits 1 when something is damaged.",
    )
    ver.add_argument("store", help="path of the store")
    ver.set_defaults(run=_verify)
    parser.set_defaults(run=lambda args: parser.print_help() or 2)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output store directory, e.g. data.zarr")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a store made with other parameters"
    )
    add_scheduler_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _generate(args) -> int:
    from mgtoolkit.data import generate, store_summary

    for option in ("resolution", "levels", "samples"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option} must be a positive integer (got {getattr(args, option)})")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer (got {args.seed})")

    # No cluster here: generate starts one (or connects) only when there is work.
    path = generate(
        args.out,
        dim=args.dim,
        resolution=args.resolution,
        levels=args.levels,
        samples=args.samples,
        seed=args.seed,
        family=args.family,
        client=args.scheduler,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        repair=args.repair,
    )
    print(store_summary(path))
    return 0


def _import(args) -> int:
    from pathlib import Path

    from mgtoolkit.data import import_arrays, store_summary

    source = Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"no input at {source}; pass a .npy file or a zarr array/group")
    if source.suffix == ".npy":
        import numpy as np

        try:
            data = np.load(source, mmap_mode="r")
        except ValueError as exc:
            if "Python objects" in str(exc):
                raise ValueError(
                    f"{source} holds Python objects (dtype object), not numbers; save ν as a "
                    "float array (np.save(path, nu.astype('float64')))"
                ) from None
            raise ValueError(
                f"{source} is not a valid .npy array file; write it with numpy.save"
            ) from None
        except Exception as exc:  # a zip (npz), a pickle, a truncated header ...
            raise ValueError(
                f"cannot read {source} as a .npy array ({type(exc).__name__}: "
                f"{str(exc)[:80]}); write it with numpy.save"
            ) from None
    else:
        import zarr

        try:
            node = zarr.open(str(source), mode="r")
        except Exception as exc:  # zarr raises several types for a non-store
            raise ValueError(f"{source} is neither a .npy file nor a zarr store ({exc})") from exc
        if isinstance(node, zarr.Group):
            if args.variable not in node:
                raise ValueError(
                    f"zarr group {source} has no array {args.variable!r}; it holds "
                    f"{sorted(node.array_keys())} — pick one with --variable"
                )
            node = node[args.variable]
        data = node
    # No cluster here: generate starts one (or connects) only when there is work.
    path = import_arrays(
        args.out,
        data,
        levels=args.levels,
        dim=args.dim,
        source=str(source.resolve()),
        client=args.scheduler,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(store_summary(path))
    return 0


def _info(args) -> int:
    from mgtoolkit.data import store_summary

    print(store_summary(args.store))
    return 0


def _verify(args) -> int:
    from mgtoolkit.data.verify import verify_store

    report = verify_store(args.store)
    print(report)
    return 0 if report.ok else 1
