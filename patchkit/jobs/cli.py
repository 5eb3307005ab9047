"""The ``patchkit`` command: it parses arguments and hands over; the work is done elsewhere.

::

    patchkit templates                                   # the templates and their parameters
    patchkit run extract_patches -p sizes 256 -p strides 128 --output-dir out/
    patchkit inspect scene.tif --sizes 256 --strides 128 # grid, count, bytes, row-band plan; reads no pixels
    patchkit extract scene.tif --sizes 256 --strides 128 --to zarr --output out/patches.zarr
    patchkit predict scene.tif model.keras --sizes 256 --strides 192 --out pred.tif   # the model over the scene
    patchkit bench --quick                               # the benchmark (from a source checkout)

Usage errors exit with status 2, failures (a bad argument, a failing notebook cell) with status 1,
each with one line on stderr that says what to do.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from ..core import backends
from ..errors import PatchkitError, PatchkitValueError, SourceReadError
from .. import sinks

__all__ = ["main", "build_parser"]


def _pair(text: str) -> int | list[int]:
    """``256`` or ``256,128`` (rows, cols); anything else is a usage error (exit status 2)."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in pixels: pass 256, or rows,cols such as 256,128")
    return parts[0] if len(parts) == 1 else parts


def _spec_options(parser: argparse.ArgumentParser, padding: str = "VALID", job: str = "the extraction",
                  nodata: bool = True) -> None:
    group = parser.add_argument_group("patch grid (as tf.image.extract_patches)")
    group.add_argument("--sizes", type=_pair, required=True, help="patch size in pixels: 256, or rows,cols such as 256,128")
    group.add_argument("--strides", type=_pair, required=True, help="distance between patch starts: 128, or rows,cols")
    group.add_argument("--rates", type=_pair, default=1, help="dilation: sample every rate-th pixel (default 1)")
    group.add_argument("--padding", default=padding, choices=("VALID", "SAME", "valid", "same"),
                       help=f"VALID: whole windows only; SAME: ceil(n / stride) patches, zero-padded (default {padding})")
    group.add_argument("--max-memory", default="512MiB", help=f"bound on all that {job} holds at once (default 512MiB)")
    if nodata:
        group.add_argument("--max-nodata-fraction", type=float, default=None,
                           help="keep patches with at most this share of nodata (0 to 1; default: keep all)")


def _blend(text: str) -> str | tuple[str, float]:
    """``gaussian``, or a scipy window with its parameter as ``tukey,0.5`` (the tuple stitch takes)."""
    name, _, parameter = text.partition(",")
    if not parameter:
        return text
    try:
        return name, float(parameter)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a blend: pass a name (gaussian, mean, cosine, none, hann...) "
                                         "or a window and its parameter such as tukey,0.5") from None


def _predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="run a model over a raster, patch by patch, and write the stitched "
                                                  "prediction (GeoTIFF or Zarr)")
    predict.add_argument("scene", help="a raster rioxarray opens (GeoTIFF, an http(s) URL, /vsicurl/...), or 'sample'")
    predict.add_argument("model", help="a Keras .keras/.h5 file, a SavedModel folder, or package.module:function "
                                       "(a callable of a batch [n, h, w, c]; the current folder is searched too)")
    _spec_options(predict, padding="SAME", job="the prediction", nodata=False)
    group = predict.add_argument_group("prediction")
    group.add_argument("--blend", type=_blend, default="gaussian",
                       help="how overlapping predictions mix: gaussian, mean, cosine, none, a scipy window (hann), or "
                            "a window and its parameter such as tukey,0.5 (default gaussian)")
    group.add_argument("--crop", type=_pair, default=0, help="pixels dropped from each side of a patch's prediction: "
                                                             "8, or rows,cols (default 0)")
    group.add_argument("--batch-size", type=int, default=None, help="patches per model call (default: as many as "
                                                                     "--max-memory allows)")
    group.add_argument("--out", default=None, help="the prediction: a .tif (GeoTIFF, one band per output "
                                                              "channel) or .zarr (default SCENE_NAME.prediction.tif here)")
    group.add_argument("--dtype", default=None, help="dtype of the prediction, e.g. float32 (default: the model's)")
    group.add_argument("--backend", default="auto", choices=backends.available(),
                       help="extraction backend: auto, or a built-in or installed one (default auto)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``patchkit`` command."""
    parser = argparse.ArgumentParser(prog="patchkit", description="TensorFlow-exact patches of large georeferenced rasters.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("templates", help="list the notebook templates and their parameters")

    run = commands.add_parser("run", help="run a notebook template headlessly with papermill")
    run.add_argument("template", help="a template name (see `patchkit templates`) or a notebook path")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a parameter; VALUE is read as Python (128, [256, 128], None, 0.2) or else as text")
    run.add_argument("-f", "--parameters-file", type=Path, help="a YAML file of parameters (-p values win)")
    run.add_argument("--output-dir", type=Path, default=Path("outputs"), help="where the executed notebook goes (default outputs)")
    run.add_argument("--kernel", help="kernel name (default: this environment's, installed as 'patchkit' on first use)")
    run.add_argument("--log-output", action="store_true", help="echo the notebook's output while it runs")

    inspect = commands.add_parser("inspect", help="grid, patch count, bytes and row-band plan of a raster, without extracting")
    inspect.add_argument("path", help="a raster rioxarray opens (GeoTIFF, an http(s) URL, /vsicurl/...), or 'sample'")
    _spec_options(inspect)
    _sink_option(inspect, "the sink whose plan to show (default zarr)")

    extract = commands.add_parser("extract", help="stream a raster's patches to a sink, with a progress bar")
    extract.add_argument("path", help="a raster rioxarray opens (GeoTIFF, an http(s) URL, /vsicurl/...), or 'sample'")
    _spec_options(extract)
    _sink_option(extract, "the sink: built in or installed (patchkit.sinks entry points); default zarr")
    extract.add_argument("--output", type=Path, required=True, help="the store, chip folder or TFRecord prefix")
    extract.add_argument("--mode", choices=("w",), default=None, help="w: overwrite an output from another run")
    extract.add_argument("--backend", default="auto", choices=backends.available(),
                         help="extraction backend: auto, or a built-in or installed one (default auto)")
    extract.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="a dask.distributed scheduler (tcp://host:8786) whose workers make and write the bands "
                              "(zarr; the output and the raster must be reachable from the workers)")

    _predict_parser(commands)

    bench = commands.add_parser("bench", help="run the extraction benchmark (needs a source checkout)")
    bench.add_argument("args", nargs="*", help="arguments for benchmarks/bench_extract.py, e.g. --quick --case dask")
    return parser


def _sink_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--to", choices=sinks.available(), default="zarr", help=help)


def _open(path: str, lazy: bool):
    """The raster at ``path`` (a file, a URL or ``/vsicurl/`` path, or the sample scene): read lazily with dask,
    or just opened (no pixels read). A remote one gets GDAL's bounded HTTP retries and timeouts first."""
    import rioxarray

    from ..core.remote import configure, is_remote
    from ..sample import sample_path

    configure(path)
    chunks = {"band": -1, "y": 1024, "x": 1024} if lazy else None
    try:
        return rioxarray.open_rasterio(sample_path() if path == "sample" else path, chunks=chunks)
    except PatchkitError:
        raise
    except Exception as err:  # rasterio's errors: a missing file, or one GDAL does not read
        if not (isinstance(err, OSError) or (type(err).__module__ or "").startswith("rasterio")):
            raise
        check = "check the URL, the server and the network" if is_remote(path) else "check the path"
        raise SourceReadError(f"cannot open {path!r} as a raster: {err}; {check}, and pass a raster GDAL "
                              "opens (a GeoTIFF...), or 'sample'") from err


def _templates() -> None:
    from .templates import parameters, templates

    for name in templates():
        print(name)
        for p in parameters(name).values():
            print(f"    {p.name:<22} {p.type:<6} default {p.default:<24} {p.help}")


def _run(args: argparse.Namespace) -> None:
    from .templates import parse_value, read_parameters_file, run_template

    given = {}
    if args.parameters_file:
        given.update(read_parameters_file(args.parameters_file))
    given.update({name: parse_value(value) for name, value in args.parameter})
    executed = run_template(args.template, given, args.output_dir, kernel=args.kernel, log_output=args.log_output)
    print(f"executed notebook: {executed}")


def _inspect(args: argparse.Namespace) -> None:
    from ..labelled.nodata import check_fraction
    from ..core.spec import PatchSpec
    from ..core.units import format_bytes

    spec = PatchSpec(args.sizes, args.strides, args.rates, args.padding)
    check_fraction(args.max_nodata_fraction)  # checked as extract checks it, though inspect counts no nodata
    scene = _open(args.path, lazy=True)  # as extract opens it: the plan is the one extract streams
    shape = (1, scene.sizes["y"], scene.sizes["x"], scene.sizes.get("band", 1))
    rows, cols = spec.grid_shape(shape)
    plan = scene.patches.plan(*_spec_args(args), sink=args.to, max_memory=args.max_memory)
    (top, bottom), (left, right) = spec.padding_amounts(shape)
    print(f"scene        {shape[3]} x {shape[1]} x {shape[2]} {scene.dtype}  {scene.rio.crs}")
    print(f"grid         {rows} x {cols} = {rows * cols} patches of {spec.sizes[0]} x {spec.sizes[1]} x {shape[3]}")
    print(f"padding      top {top}, bottom {bottom}, left {left}, right {right}")
    print(f"output       {format_bytes(spec.nbytes(shape, scene.dtype))} ({spec.nbytes(shape, scene.dtype)} bytes)")
    print(f"plan         {len(plan.bands)} row bands of {plan.band_rows} patch rows, peak {format_bytes(plan.peak)} "
          f"under max_memory {args.max_memory}")


def _extract(args: argparse.Namespace) -> None:
    scene = _open(args.path, lazy=True)
    kwargs = dict(max_memory=args.max_memory, max_nodata_fraction=args.max_nodata_fraction, mode=args.mode,
                  backend=args.backend, progress=True)
    if args.scheduler is not None:
        if not sinks.get(args.to).distributed:
            raise PatchkitValueError(f"--scheduler runs the bands of sinks that write on a cluster "
                                     f"({', '.join(n for n in sinks.available() if sinks.get(n).distributed)}); the "
                                     f"{args.to!r} sink writes here: leave out --scheduler, or pass --to zarr")
        kwargs["scheduler"] = args.scheduler
    print(f"wrote {scene.patches.to(args.to, args.output, *_spec_args(args), **kwargs)}")


def _predict(args: argparse.Namespace) -> None:
    import time

    from ..core.budget import Budget
    from ..core.spec import PatchSpec
    from ..sinks.raster import out_path
    from ..stitch import predict
    from ..stitch.loading import load_model
    from .templates import check_prediction

    spec = PatchSpec(args.sizes, args.strides, args.rates, args.padding)  # refused before a file is read or a model loaded
    out = out_path(args.out if args.out is not None else f"{_stem(args.scene)}.prediction.tif")
    Budget.of(args.max_memory)
    check_prediction(spec, args.crop, args.blend, args.batch_size,
                     fix="pass e.g. --batch-size 16, or leave it out to pick one under --max-memory")
    scene = _open(args.scene, lazy=True)
    started = time.perf_counter()
    with _importable_here():
        model = load_model(args.model)
    loaded = time.perf_counter()
    written = predict(scene, model, *_spec_args(args), batch_size=args.batch_size, blend=args.blend, crop=args.crop,
                      max_memory=args.max_memory, out=out, dtype=args.dtype, backend=args.backend)
    seconds = time.perf_counter() - loaded
    rows, cols = spec.grid_shape((1, scene.sizes["y"], scene.sizes["x"], scene.sizes.get("band", 1)))
    print(f"wrote {written}")
    print(f"prediction   {_describe(Path(written))}")
    print(f"scene        {scene.sizes.get('band', 1)} x {scene.sizes['y']} x {scene.sizes['x']} {scene.dtype}  "
          f"{scene.rio.crs}")
    print(f"patches      {rows} x {cols} = {rows * cols} of {spec.sizes[0]} x {spec.sizes[1]}, blend {args.blend!r}")
    print(f"took         {seconds:.1f} s ({rows * cols / max(seconds, 1e-9):.1f} patches/s), and "
          f"{loaded - started:.1f} s to load the model (imports included)")


def _stem(scene: str) -> str:
    """A name for the prediction of ``scene`` (a path, a URL, or 'sample')."""
    name = scene.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return Path(name).stem or "scene"


@contextmanager
def _importable_here():
    """The current folder on ``sys.path`` while the model loads, so that ``mymodel:predict`` finds ./mymodel.py (as
    ``python -m`` would; the installed ``patchkit`` script starts from its own folder)."""
    here = str(Path.cwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def _describe(path: Path) -> str:
    """``bands x rows x cols dtype CRS (bytes)`` of a written prediction (GeoTIFF or Zarr)."""
    from ..core.units import format_bytes

    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if path.suffix.lower() == ".zarr":
        import rioxarray  # noqa: F401  (.rio reads the CRS from the store's grid mapping)
        import xarray as xr

        with xr.open_zarr(path, decode_coords="all") as stored:
            image = next(iter(stored.data_vars.values()))
            shape, dtype, crs = " x ".join(map(str, image.shape)), image.dtype, image.rio.crs
    else:
        import rasterio

        with rasterio.open(path) as src:
            shape, dtype, crs = f"{src.count} x {src.height} x {src.width}", src.dtypes[0], src.crs
    return f"{shape} {dtype}  {crs or 'no CRS'}  ({format_bytes(size)} on disk)"


def _spec_args(args: argparse.Namespace) -> tuple:
    """``(sizes, strides, rates, padding)`` as the command line gave them."""
    return args.sizes, args.strides, args.rates, args.padding


def _bench(arguments: Sequence[str]) -> int:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_extract.py"
    if not script.exists():
        print(f"patchkit bench: the benchmark is not installed with the package ({script} is missing); "
              "run it from a source checkout", file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, str(script), *arguments])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``patchkit`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and argv[1:2] not in (["-h"], ["--help"]):
        return _bench(argv[1:])  # the benchmark parses its own options
    args = build_parser().parse_args(argv)
    try:
        if args.command == "templates":
            _templates()
        elif args.command == "run":
            _run(args)
        elif args.command == "inspect":
            _inspect(args)
        elif args.command == "extract":
            _extract(args)
        elif args.command == "predict":
            _predict(args)
        else:
            return _bench(args.args)
    except (PatchkitError, OSError) as err:
        print(f"patchkit {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
