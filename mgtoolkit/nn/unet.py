"""The fully convolutional U-Net that maps ν on cells to u on nodes.

See docs/math.md, 'Training cycles'.

Architecture (paper defaults: depth 3, 16 base filters doubling per depth, conv + batch norm +
LeakyReLU blocks, transposed-conv upsampling with skip concatenation, sigmoid output):

- **Input**, per sample, on cells ``(n,) * dim``: ``(log ν − mean(log ν)) / s`` plus, optionally,
  the cell-centre x coordinate mapped to [-1, 1]. Why log ν: the KL family is Gaussian in log ν
  and its contrast reaches 10⁶, which a linear input would squash into a few cells. Why subtract
  the per-sample mean: the solution is invariant under ν → cν (both the PDE and the minimizer of
  J), so the mean carries no information; removing it exactly is better than learning to ignore
  it. ``s`` is one fixed dataset statistic (buffer ``log_nu_scale``, set by the trainer from the
  training data, saved with the weights) — not per sample, since the spread of log ν *is*
  information (contrast). Why the x channel: the Dirichlet data depend on x only, and a
  coordinate in [-1, 1] means the same thing at every level, so weights stay level-independent.
- **Body**: ``depth`` max-pool stages; each block is ``convs_per_block`` × (3^d conv → norm →
  activation). A grid whose side is not a multiple of ``2**depth`` (coarse levels) is padded by
  edge replication to the next multiple and cropped back, so one network runs on every level.
- **Cells → nodes head**: replicate-pad the cell features by one and apply a learned conv with
  kernel 2 (no padding): ``n`` cells give exactly ``n + 1`` nodes, every node seeing its 2^d
  adjacent cells. Then sigmoid (the maximum principle puts u in [0, 1]) and
  :func:`mgtoolkit.fem.impose_dirichlet`, which sets the x = 0 face to 1 and x = 1 to 0 exactly
  (u = u_int χ_int + u_bc χ_b): the network never learns boundary values.
- **Layout**: on CPU, activations are channels-last (``torch.channels_last`` /
  ``channels_last_3d``) from the input on — oneDNN's native layout. In the default
  (channels-first) layout every convolution reorders its input, output and gradients to a
  blocked layout and back, which costs about as much as the convolutions themselves on this
  network (figures: docs/performance.md, ``benchmarks/throughput.py``).
  Every layer here (batch norm, pooling, transposed conv, concatenation, replicate padding)
  keeps the layout, so nothing is converted between layers. The numbers are the same up to
  float rounding; the weights stay in their usual layout, so ``state_dict`` is unchanged.
- **Symmetry averaging** (optional, at inference; attribute ``mirror_average``): the problem
  is invariant under its symmetry group (:mod:`mgtoolkit.nn.symmetry`): reversing y or z
  reverses u, reversing x, which swaps the Dirichlet faces, maps u to 1 − u reversed, and in
  3D swapping y and z swaps them in u: 4 maps in 2D, 16 in 3D. A network is only approximately
  so. With ``mirror_average`` the output is the mean of the network over the images of ν under
  the whole group, or a chosen subgroup, each mapped back: exactly invariant under that
  subgroup, at (its size) times the cost. Its errors partly cancel, so the averaged network is
  more accurate (docs/performance.md has the figures).
- **Prediction at a coarser resolution** (optional, at inference; attribute ``predict_at``):
  the network runs on ν coarsened to ``predict_at`` cells per side (geometric mean of each
  block of cells, as a store's coarse levels of array data) and its u is interpolated
  (trilinear: the multigrid prolongation) back to the field's nodes. Why: a network sees a
  fixed number of cells (its receptive field), so on a field finer than it was trained on it
  sees a smaller part of the domain, while u depends on ν everywhere; at the resolution it was
  trained at it sees what it learned from. Worth it where u varies on scales the coarse grid
  resolves (the KL family does: docs/pretrained.md); fine-scale features of ν (inclusions a few
  cells wide) are averaged away.
- **Growth** (architectural adaptation, paper §4.1.2): :meth:`UNet.grow` adds a pair of fresh
  residual blocks at full resolution (after the first encoder block and before the head), their
  last conv zero-initialised, so the network's function is unchanged at the moment of growth and
  training continues smoothly with more capacity.
- **Cascade** (level transfer that keeps the coarse function): :meth:`UNet.cascade` makes the
  network so far the *coarse stage* of the network from then on, which computes
  u = P u_c + c, where u_c is the coarse stage on ν coarsened by 2 (geometric means of 2^d
  cells, as a store's coarser level), P the multigrid prolongation to the field's nodes and c
  the correction this network's own layers compute (its head zeroed at the call, so the
  function is unchanged at that moment). Why: a network's weights applied at twice the
  resolution compute a different function (its convolutions see twice the cells per unit
  length) — barely better than the linear profile on KL fields — while the coarse network run
  on coarsened ν and interpolated is nearly as accurate as at its own level
  (docs/performance.md). A training cycle that moves to finer levels with
  ``adaptation = "cascade"`` so starts each finer level from what the coarser ones learned.
  Both stages train; the coarse stage costs 1/2^d of the finer forward and backward pass.
  A cascaded network runs whole fields (no tiles, no slabs).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgtoolkit.nn import symmetry

__all__ = ["ACTIVATIONS", "NORMS", "UNet", "UNetConfig", "mirror_back", "mirror_mean", "mirrors"]

#: Normalization layers by name (``none`` = identity).
NORMS = ("batch", "instance", "group", "none")
#: Activations by name.
ACTIVATIONS = ("leaky_relu", "relu", "gelu", "silu")

_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


#: Deepest U-Net accepted: 2^12 = 4096 cells of padding per side is already beyond any use.
MAX_DEPTH = 12
#: Most filters of the deepest block (base_filters · 2^depth, or max_filters).
MAX_FILTERS = 16384


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`.

    Parameters
    ----------
    dim : int
        Spatial dimension, 2 or 3.
    depth : int
        Number of down-sampling stages (≥ 1); filters double per stage.
    base_filters : int
        Channels of the first (full-resolution) block.
    norm : str
        One of :data:`NORMS`.
    activation : str
        One of :data:`ACTIVATIONS`.
    convs_per_block : int
        Convolutions per block (the paper: 1; 2 is the classic U-Net and uses the CPU better).
    x_channel : bool
        Feed the cell-centre x coordinate as a second input channel.
    max_filters : int, optional
        Cap on the channels of any block (default: none, filters double at every stage). Lets
        a deeper network see farther (each stage doubles the receptive field) without the
        cost of its widest stages: on a 128² field a 3-stage network sees about 100 cells,
        less than the field, while the solution at a node depends on the whole field. 2D
        128², half-V, 60 epochs at 128² (``benchmarks/accuracy.py``): held-out relative L2
        0.0181 with depth 3, 0.0145 with depth 5 and ``max_filters = 64``, at the same cost.
    """

    dim: int = 2
    depth: int = 3
    base_filters: int = 16
    norm: str = "batch"
    activation: str = "leaky_relu"
    convs_per_block: int = 2
    x_channel: bool = True
    max_filters: int | None = None

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"model.dim must be 2 or 3 (got {self.dim!r})")
        for name, lo in (("depth", 1), ("base_filters", 1), ("convs_per_block", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"model.{name} must be an integer ≥ {lo} (got {value!r})")
        for name, hi in (("depth", MAX_DEPTH), ("base_filters", 4096), ("convs_per_block", 16)):
            if getattr(self, name) > hi:
                raise ValueError(
                    f"model.{name} must be at most {hi} (got {getattr(self, name)}); a U-Net of "
                    "depth d pads every field to a multiple of 2^d cells per side"
                )
        m = self.max_filters
        if m is not None and (
            isinstance(m, bool) or not isinstance(m, int) or m < self.base_filters
        ):
            raise ValueError(
                f"model.max_filters must be an integer ≥ base_filters = {self.base_filters}, or "
                f"unset for no cap (got {m!r})"
            )
        widest = min(self.base_filters * 2**self.depth, m or self.base_filters * 2**self.depth)
        if widest > MAX_FILTERS:
            raise ValueError(
                f"the deepest block would have {widest} filters (base_filters × 2^depth), more "
                f"than {MAX_FILTERS}; lower model.depth or base_filters, or set max_filters"
            )
        if self.norm not in NORMS:
            raise ValueError(f"model.norm must be one of {', '.join(NORMS)} (got {self.norm!r})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {', '.join(ACTIVATIONS)} "
                f"(got {self.activation!r})"
            )

    def to_dict(self) -> dict:
        """Plain dict of the fields (for config files and checkpoints)."""
        return asdict(self)


def mirrors(dim: int) -> list[tuple[int, ...]]:
    """The 2^d mirror images of a field, each as the tuple of its reversed axes.

    Axes are the field's own (0 .. dim − 1, no batch axis); ``dim − 1`` is x, the axis whose
    reversal swaps the Dirichlet faces. The first image, ``()``, is the field itself. These are
    the maps of :func:`mgtoolkit.nn.symmetry.group` without ``swap_yz``, in its order.
    """
    return [m.flips for m in symmetry.group(dim) if not m.swap]


def mirror_mean(fn, nu: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Mean of a solver ``fn`` over the 2^d mirror images of ``nu``, each mapped back.

    :func:`mgtoolkit.nn.symmetry.group_mean` over the reversals only (no ``swap_yz``); ``fn``
    maps ν ``(B,) + (n,) * dim`` on cells to u ``(B,) + (n + 1,) * dim`` on nodes.
    """
    return symmetry.group_mean(fn, nu, [symmetry.SymmetryMap(dim, flips=a) for a in mirrors(dim)])


def mirror_back(u: torch.Tensor, axes: tuple[int, ...], *, dim: int) -> torch.Tensor:
    """u ``(B,) + (n + 1,) * dim`` of the mirror image ``axes`` mapped back to the field itself.

    :func:`mgtoolkit.nn.symmetry.map_back` of the reversal of ``axes`` (the field's own axes,
    see :func:`mirrors`): reverses them and, when x is among them, takes ``1 − u``.
    """
    return symmetry.map_back(symmetry.SymmetryMap(dim, flips=tuple(axes)), u)


def _norm(kind: str, channels: int, dim: int) -> nn.Module:
    if kind == "batch":
        # momentum=None: running statistics are the plain average over the batches since the
        # last reset (the trainer resets them at every epoch start), so eval-mode predictions
        # use the current level's and weights' statistics.
        return (nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d)(channels, momentum=None)
    if kind == "instance":
        return (nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def _act(kind: str) -> nn.Module:
    # In place where autograd allows it (the backward of (leaky) ReLU needs only its output, and
    # the preceding norm or conv does not need its own output): one activation-sized tensor
    # less to allocate, fill and keep per block.
    return {
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "gelu": nn.GELU,
        "silu": nn.SiLU,
    }[kind]()


def _conv(dim: int) -> type[nn.Module]:
    return nn.Conv2d if dim == 2 else nn.Conv3d


def _block(cfg: UNetConfig, cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(cfg.convs_per_block):
        # The conv bias is redundant in front of a normalization with its own shift.
        bias = cfg.norm == "none"
        layers += [
            _conv(cfg.dim)(cin if i == 0 else cout, cout, 3, padding=1, bias=bias),
            _norm(cfg.norm, cout, cfg.dim),
            _act(cfg.activation),
        ]
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """``x + conv(act(norm(conv(x))))`` with the last conv zero-initialised (identity at birth)."""

    def __init__(self, cfg: UNetConfig, channels: int) -> None:
        super().__init__()
        conv = _conv(cfg.dim)
        self.body = nn.Sequential(
            conv(channels, channels, 3, padding=1, bias=cfg.norm == "none"),
            _norm(cfg.norm, channels, cfg.dim),
            _act(cfg.activation),
            conv(channels, channels, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def check_predict_at(value: int | None) -> int | None:
    """``value`` as :attr:`UNet.predict_at` takes it: None or a power of two ≥ 2 (else raise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"predict_at must be an int or None (got {value!r})")
    if value < 2 or value & (value - 1):
        raise ValueError(
            f"predict_at must be a power of two ≥ 2 cells per side (got {value}); use the "
            "resolution the network was trained at, e.g. 64"
        )
    return int(value)


def coarsening(n: int, predict_at: int | None) -> int:
    """Cells per side of an ``n``-cell field merged into one where the network runs (1: none).

    Raises
    ------
    ValueError
        If the field is coarser than ``predict_at`` or ``n / predict_at`` is not a power of two.
    """
    if predict_at is None:
        return 1
    factor = n // predict_at
    if n % predict_at or factor & (factor - 1):
        raise ValueError(
            f"the network predicts at {predict_at} cells per side (predict_at) but the field "
            f"has {n}: it can only coarsen a field {predict_at} × 2^k cells wide; set predict_at "
            "to the field's side or less (a power of two), or None"
        )
    return factor


def interpolate_nodes(u: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """u on nodes ``(B,) + (m + 1,) * dim`` interpolated to ``(B,) + (factor·m + 1,) * dim``.

    Trilinear (bilinear in 2D) interpolation, the multigrid prolongation applied log2(factor)
    times: nodal values, and so the exact Dirichlet faces, are kept.
    """
    from mgtoolkit.fem.multigrid import prolong

    for _ in range(factor.bit_length() - 1):
        u = prolong(u, dim)
    return u


class UNet(nn.Module):
    """U-Net from ν on cells to u on nodes with exact Dirichlet values.

    Parameters
    ----------
    config : UNetConfig, optional
        Architecture; keyword arguments build one when omitted (``UNet(dim=3, depth=2)``).
    channels_last : bool or None
        Run the activations channels-last (``True``) or channels-first (``False``, the same
        function up to rounding). ``None`` (default): channels-last on CPU, where it was
        measured (module notes), the framework's default layout on other devices (GPUs: not
        measured yet). Not part of the architecture: the attribute of the same name may be
        changed at any time.
    mirror_average : bool, str or sequence of str
        Average over symmetry images (module notes). ``True``: the whole group
        (:func:`mgtoolkit.nn.symmetry.group`, 4 maps in 2D, 16 in 3D); ``False``: off (one
        pass); a sequence of map names (or one comma-separated string), e.g.
        ``("identity", "flip_x")``: that subgroup, validated by
        :func:`mgtoolkit.nn.symmetry.subgroup` (ValueError otherwise). The output is exactly
        invariant under the maps averaged over, at that many times the cost. Like
        ``channels_last``, an attribute that may be changed at any time (and is validated when
        set) and is not saved with the weights; it reads back as ``True`` (the whole group,
        also when named map by map), ``False`` (also for ``("identity",)``) or the tuple of the
        subgroup's normal-form names. :attr:`symmetry_maps` gives the maps.
    predict_at : int, optional
        Run on ν coarsened to this many cells per side (a power of two ≥ 2) and interpolate
        u back to the field's nodes (module notes); ``None`` (default): run at the field's
        own resolution. A field coarser than ``predict_at`` is refused (ValueError). An
        attribute like ``mirror_average``: validated when set, not saved with the weights.

    Notes
    -----
    Input ``nu``: float tensor ``(B,) + (n,) * dim`` on cells, ν > 0.
    Output ``u``: float tensor ``(B,) + (n + 1,) * dim`` on nodes, in [0, 1], with
    ``u[..., 0] == 1`` and ``u[..., n] == 0`` exactly. Any power-of-two ``n`` ≥ 2 works, with the
    same weights (fully convolutional).
    """

    def __init__(
        self,
        config: UNetConfig | None = None,
        *,
        channels_last: bool | None = None,
        mirror_average: bool | str | Sequence[str] = False,
        predict_at: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        if config is None:
            config = UNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a UNetConfig or keyword arguments, not both")
        self.config = cfg = config
        self.mirror_average = mirror_average
        self.predict_at = predict_at
        d, f = cfg.dim, cfg.base_filters
        cap = cfg.max_filters or f * 2**cfg.depth
        widths = [min(f * 2**i, cap) for i in range(cfg.depth + 1)]
        self.register_buffer("log_nu_scale", torch.ones(()))
        self.encoder = nn.ModuleList(
            _block(cfg, cin, cout)
            for cin, cout in zip([1 + int(cfg.x_channel), *widths[:-1]], widths, strict=True)
        )
        convt = nn.ConvTranspose2d if d == 2 else nn.ConvTranspose3d
        self.up = nn.ModuleList(
            convt(widths[i + 1], widths[i], 2, stride=2) for i in range(cfg.depth)
        )
        self.decoder = nn.ModuleList(
            _block(cfg, 2 * widths[i], widths[i]) for i in range(cfg.depth)
        )
        self.grown_in = nn.ModuleList()
        self.grown_out = nn.ModuleList()
        self.head = _conv(d)(f, 1, 2)
        #: The coarse stage (:meth:`cascade`), a UNet of the same architecture, or None.
        self.coarse: UNet | None = None

    @classmethod
    def from_state(
        cls, config: dict, state: dict, *, growth: int = 0, cascades: int = 0, **kwargs
    ) -> UNet:
        """The network of architecture ``config`` (:meth:`UNetConfig.to_dict`), grown
        ``growth`` times and cascaded ``cascades`` times, with the weights ``state``;
        ``kwargs`` go to the constructor (``mirror_average``, ``predict_at``)."""
        model = cls(UNetConfig(**config), **kwargs)
        for _ in range(growth):
            model.grow()
        for _ in range(cascades):
            model.cascade()
        model.load_state_dict(state)
        return model

    @property
    def mirror_average(self) -> bool | tuple[str, ...]:
        """``False``, ``True`` (the whole group) or the names of the subgroup averaged over."""
        return self._mirror_average

    @mirror_average.setter
    def mirror_average(self, value: bool | str | Sequence[str]) -> None:
        dim = self.config.dim
        if isinstance(value, (bool, np.bool_)):
            value = bool(value)
            maps = symmetry.group(dim) if value else (symmetry.SymmetryMap(dim),)
        elif isinstance(value, str) or isinstance(value, Iterable):
            names = value.split(",") if isinstance(value, str) else value
            maps = symmetry.subgroup(dim, [n.strip() if isinstance(n, str) else n for n in names])
            # the identity alone is no averaging; every map is the whole group
            value = tuple(m.name for m in maps)
            value = False if len(maps) == 1 else (len(maps) == len(symmetry.group(dim)) or value)
        else:
            raise TypeError(
                "mirror_average must be True (the whole symmetry group), False, or a sequence "
                f"of symmetry map names (got {value!r})"
            )
        self._mirror_average, self._symmetry_maps = value, maps

    @property
    def predict_at(self) -> int | None:
        """Cells per side the network runs at (ν coarsened, u interpolated back), or None."""
        return self._predict_at

    @predict_at.setter
    def predict_at(self, value: int | None) -> None:
        self._predict_at = check_predict_at(value)

    @property
    def symmetry_maps(self) -> tuple[symmetry.SymmetryMap, ...]:
        """The maps :meth:`forward` averages over; just the identity when averaging is off."""
        return self._symmetry_maps

    @property
    def growth(self) -> int:
        """How many times :meth:`grow` has been applied."""
        return len(self.grown_in)

    def grow(self) -> list[nn.Parameter]:
        """Add a pair of fresh, identity-initialised residual blocks at full resolution.

        Returns the new parameters (add them to the optimizer). The function the network
        computes is unchanged by the call.
        """
        if self.coarse is not None:
            raise ValueError("a cascaded network cannot grow (one adaptation per network)")
        f = self.config.base_filters
        dev = self.head.weight.device
        fresh = [_Residual(self.config, f).to(dev), _Residual(self.config, f).to(dev)]
        self.grown_in.append(fresh[0])
        self.grown_out.append(fresh[1])
        return [p for m in fresh for p in m.parameters()]

    @property
    def cascades(self) -> int:
        """How many times :meth:`cascade` has been applied (coarse stages nested)."""
        return 0 if self.coarse is None else 1 + self.coarse.cascades

    def cascade(self) -> list[nn.Parameter]:
        """Make the network so far the coarse stage of this one (module notes, "Cascade").

        From now on the network computes u = P u_c + c on a field of ``n`` cells per side
        (``n`` even): u_c is a copy of the network as it was, run on ν coarsened to ``n / 2``
        cells, P the prolongation to the nodes, c this network's head output, zeroed here so
        the function on fields of ``n`` cells is the copy's run at ``n / 2`` and interpolated.
        This network keeps its weights (a start for the correction). Returns the coarse
        stage's parameters (add them to the optimizer).
        """
        if self.growth:
            raise ValueError("a grown network cannot be cascaded (one adaptation per network)")
        coarse = copy.deepcopy(self)
        coarse.mirror_average, coarse.predict_at = False, None  # the outer network's settings
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
        self.coarse = coarse
        return list(coarse.parameters())

    def inputs(
        self,
        nu: torch.Tensor,
        *,
        log_nu_mean: float | torch.Tensor | None = None,
        x_cells: tuple[int, int] | None = None,
        n: int | None = None,
    ) -> torch.Tensor:
        """Network input channels ``(B, 1 or 2) + shape`` from ν ``(B,) + shape`` on cells.

        By default ``nu`` is whole fields: the mean of log ν is each sample's own and the x
        coordinate spans its cells. A part of a larger field (a tile, a few planes) passes the
        whole field's ``log_nu_mean`` (a float, or a tensor ``(B,) + (1,) * dim`` of one mean
        per sample), the global x range of its cells ``x_cells`` (half-open)
        and the whole field's cells per side ``n``.
        """
        d = self.config.dim
        if nu.dim() != d + 1:
            raise ValueError(
                f"UNet(dim={d}) expects ν of shape (batch,) + (n,)*{d} on cells "
                f"(got {tuple(nu.shape)})"
            )
        spatial = tuple(range(1, d + 1))
        log_nu = torch.log(nu)
        mean = log_nu.mean(dim=spatial, keepdim=True) if log_nu_mean is None else log_nu_mean
        x = (log_nu - mean) / self.log_nu_scale
        channels = [x]
        if self.config.x_channel:
            n = nu.shape[-1] if n is None else n
            x0, x1 = (0, nu.shape[-1]) if x_cells is None else x_cells
            cells = torch.arange(x0, x1, device=nu.device, dtype=nu.dtype)
            channels.append(((cells + 0.5) * (2.0 / n) - 1.0).expand_as(x))
        return torch.stack(channels, dim=1)

    def forward(self, nu: torch.Tensor) -> torch.Tensor:
        factor = coarsening(nu.shape[-1], self._predict_at)
        if self.coarse is not None and (nu.shape[-1] // factor) % 2**self.cascades:
            raise ValueError(
                f"a network with {self.cascades} coarse stage(s) (adaptation = 'cascade') "
                f"halves the field {self.cascades} times: it needs a multiple of "
                f"{2**self.cascades} cells per side (got {nu.shape[-1] // factor})"
            )
        if factor > 1:
            from mgtoolkit.fields import geometric_coarsen

            nu = geometric_coarsen(nu, factor, batched=True)
        if len(self._symmetry_maps) > 1:
            u = symmetry.group_mean(self._forward, nu, self._symmetry_maps)
        else:
            u = self._forward(nu)
        return interpolate_nodes(u, factor, self.config.dim)

    def _forward(self, nu: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = self.to_layout(self.inputs(nu))
        n = x.shape[-1]
        multiple = 2**cfg.depth
        pad = (-n) % multiple
        if pad:
            lo, hi = pad // 2, pad - pad // 2
            x = F.pad(x, (lo, hi) * cfg.dim, mode="replicate")
        x = self.features(x)
        if pad:
            x = x[(..., *[slice(lo, lo + n)] * cfg.dim)]
        # Cells → nodes: each node sees its 2^d adjacent cells (edge cells replicated).
        head = self.head(F.pad(x, (1, 1) * cfg.dim, mode="replicate"))
        if self.coarse is None:
            return self.outputs(head)
        return self._corrected(nu, head)

    def _corrected(self, nu: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """u = P u_c + c: the coarse stage's u interpolated, plus the head's correction."""
        from mgtoolkit.fem import impose_dirichlet
        from mgtoolkit.fields import geometric_coarsen

        u_c = self.coarse(geometric_coarsen(nu, 2, batched=True))
        return impose_dirichlet(
            interpolate_nodes(u_c, 2, self.config.dim).to(head.dtype) + head[:, 0]
        )

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout the activations run in (``channels_last`` above)."""
        if self.channels_last or (self.channels_last is None and x.device.type == "cpu"):
            return x.contiguous(memory_format=_CHANNELS_LAST[self.config.dim])
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder–decoder body: input channels → ``base_filters`` features, on cells.

        ``x``: ``(B, 1 or 2) + shape`` from :meth:`inputs`, every side a multiple of
        ``2**depth``; returns ``(B, base_filters) + shape``. The head (``self.head`` on the
        features replicate-padded by one cell, then :meth:`outputs`) maps them to nodes.
        """
        cfg = self.config
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i == 0:
                for g in self.grown_in:
                    x = g(x)
            if i < cfg.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2) if cfg.dim == 2 else F.max_pool3d(x, 2)
        for i in reversed(range(cfg.depth)):
            x = self.decoder[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        for g in self.grown_out:
            x = g(x)
        return x

    @staticmethod
    def outputs(head: torch.Tensor) -> torch.Tensor:
        """u ``(B,) + nodes`` from the head's output ``(B, 1) + nodes``: sigmoid, then the
        exact Dirichlet values (:func:`mgtoolkit.fem.impose_dirichlet`)."""
        from mgtoolkit.fem import impose_dirichlet

        return impose_dirichlet(torch.sigmoid(head[:, 0]))
