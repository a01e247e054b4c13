"""Stateless pieces of the Gradient Balance Module (GBM): loss weights from gradient magnitudes, and the
per-image, per-channel L-infinity normalisation of the synthetic images' gradient.

The stateful part (accumulating magnitudes per group, sampling schedule, history) lives in
[`GradientBalancer`][hmdc_modules.balancer.GradientBalancer], which calls these functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hmdc_modules._validation import check_finite, check_non_negative_float, check_tensor

__all__ = ["balance_weights", "normalize_image_gradients"]


def _balance_weights_unchecked(magnitudes: Tensor) -> Tensor:
    """``balance_weights`` without argument checks (inputs already known to be finite and >= 0)."""
    positive = magnitudes > 0
    # Zero entries must neither define the minimum nor be divided by: mask them with +inf / 1.
    masked = torch.where(positive, magnitudes, torch.full_like(magnitudes, float("inf")))
    smallest = masked.amin(dim=-1, keepdim=True)
    smallest = torch.where(torch.isinf(smallest), torch.ones_like(smallest), smallest)
    safe = torch.where(positive, magnitudes, torch.ones_like(magnitudes))
    return torch.where(positive, smallest / safe, torch.ones_like(magnitudes))


def balance_weights(magnitudes: Tensor) -> Tensor:
    r"""Loss weights that equalise accumulated gradient magnitudes (HMDC's GBM, method doc section 1.2).

    For magnitudes $A_1, \dots, A_K$ along the last dimension the weights are

    $$w_k = \frac{1 / A_k}{\max_j 1 / A_j} = \frac{\min_j A_j}{A_k},$$

    so the loss with the smallest accumulated gradient keeps weight exactly $1$ and every other loss is scaled
    down to its magnitude: $w_k A_k = \min_j A_j$ for all $k$. The weights are invariant to a common rescaling
    of all magnitudes, and rescaling one $A_k$ by $c$ rescales only $w_k$ (by $1/c$) unless $A_k$ is or becomes
    the minimum.

    Zero-safe: an entry $A_k = 0$ (a loss that put no gradient on the target) gets weight $1$ and is ignored
    when taking the minimum, which runs over the positive entries only; a row of zeros gives all ones.

    Args:
        magnitudes: Non-negative, finite accumulated gradient magnitudes, one per loss along the last
            dimension. Any leading dimensions (e.g. groups or classes) are batch dimensions.

    Returns:
        The weights, same shape, dtype and device as ``magnitudes``, each in $(0, 1]$ with a maximum of exactly
        $1$ per row.

    Raises:
        TypeError: If ``magnitudes`` is not a floating-point tensor.
        ValueError: If ``magnitudes`` is 0-dimensional, has an empty last dimension, holds NaN/inf or a
            negative entry.

    Shape:
        - magnitudes: $(*, K)$
        - output: $(*, K)$

    Examples:
        >>> import torch
        >>> balance_weights(torch.tensor([2.0, 0.5, 8.0]))
        tensor([0.2500, 1.0000, 0.0625])
        >>> balance_weights(torch.tensor([[0.0, 3.0], [0.0, 0.0]]))
        tensor([[1., 1.],
                [1., 1.]])
    """
    check_tensor("magnitudes", magnitudes, floating=True)
    if magnitudes.ndim == 0 or magnitudes.shape[-1] == 0:
        raise ValueError(
            f"`magnitudes` must have shape (*, K) with K >= 1 losses along the last dimension, "
            f"got shape {tuple(magnitudes.shape)}"
        )
    check_finite("magnitudes", magnitudes)
    if bool((magnitudes < 0).any()):
        smallest = float(magnitudes.min())
        raise ValueError(f"`magnitudes` must be non-negative gradient magnitudes, got a minimum of {smallest}")
    return _balance_weights_unchecked(magnitudes)


def normalize_image_gradients(grad: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Scale each channel of each image's gradient to a max-abs of about one (method doc section 1.4).

    Every $H \times W$ slice $G$ of the gradient (one channel of one image) is divided by its own L-infinity norm:

    $$G \leftarrow \frac{G}{\max_{h,w} |G_{h,w}| + \varepsilon}.$$

    HMDC applies this to the synthetic images' gradient after all classes have back-propagated and before the
    image optimiser step. A slice that is entirely zero stays zero (also with ``eps=0``).

    The function returns a new tensor. To normalise a gradient in place, e.g. between ``backward`` and
    ``optimizer.step()``, write the result back:

    ```python
    images.grad.copy_(normalize_image_gradients(images.grad))
    ```

    Args:
        grad: The gradient (or any tensor) to normalise; the last three dimensions are channels, height and
            width, leading dimensions are batch dimensions (e.g. classes and images per class).
        eps: Non-negative constant added to each slice's max-abs value; the reference uses ``1e-6``.

    Returns:
        The normalised gradient, same shape, dtype and device as ``grad``; every entry lies in $[-1, 1]$.

    Raises:
        TypeError: If ``grad`` is not a floating-point tensor or ``eps`` is not a number.
        ValueError: If ``grad`` has fewer than 3 dimensions or holds NaN/inf (which would poison the images),
            or ``eps`` is negative or not finite.

    Shape:
        - grad: $(*, C, H, W)$
        - output: $(*, C, H, W)$

    Examples:
        >>> import torch
        >>> g = torch.tensor([[[[0.5, -2.0], [1.0, 0.0]]]])  # one image, one channel, 2x2
        >>> normalize_image_gradients(g, eps=0.0)
        tensor([[[[ 0.2500, -1.0000],
                  [ 0.5000,  0.0000]]]])
    """
    check_tensor("grad", grad, floating=True)
    if grad.ndim < 3:
        raise ValueError(
            f"`grad` must have at least 3 dimensions (*, C, H, W) to be normalised per channel, "
            f"got shape {tuple(grad.shape)}"
        )
    eps = check_non_negative_float("eps", eps)
    if grad.numel() == 0:
        return grad.clone()
    check_finite("grad", grad)
    scale = grad.abs().amax(dim=(-2, -1), keepdim=True) + eps
    positive = scale > 0
    safe = torch.where(positive, scale, torch.ones_like(scale))
    return torch.where(positive, grad / safe, torch.zeros_like(grad))
