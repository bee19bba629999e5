"""One sentence of intuition per rule, said the first time a document applies it."""
from __future__ import annotations

#: rule label (as the rule table names it) -> why the rule looks the way it does
INTUITION = {
    "matrix product": "each entry of $U V$ is a sum of products, so a change in $U$ reaches the "
                      "result through every column of $V$: the adjoint is multiplied by $V^{\\top}$.",
    "elementwise function": "an elementwise function changes each entry on its own, so the adjoint "
                            "is scaled entry by entry by the local slope.",
    "broadcast (summed over the stretched axes)": "a value repeated along an axis influences every "
                                                  "copy, so its adjoint adds up the adjoints of all copies.",
    "broadcast": "a value repeated along an axis influences every copy, so its adjoint adds up the "
                 "adjoints of all copies.",
    "reduction (sum)": "every entry of a sum moves it one for one, so each entry receives the sum's "
                       "adjoint unchanged.",
    "reduction (max)": "max pooling sends the gradient to the entry that won: only the maximum "
                       "moves the result, the other entries get 0.",
    "log-softmax": "raising one logit raises its own log-probability and lowers every other one in "
                   "proportion to its probability, which is why the result subtracts the "
                   "probabilities times the adjoint's row sum.",
    "softmax": "the probabilities of a row sum to 1, so pushing one up pushes the others down: the "
               "adjoint is taken relative to its probability-weighted mean.",
    "reshape": "a reshape only renames positions, so the adjoint is reshaped back.",
    "transpose": "a transpose only moves entries, so the adjoint is transposed back.",
    "slice": "a slice reads some entries and ignores the rest, so the adjoint goes back to those "
             "entries and the others get 0.",
    "zero padding": "padding adds zeros that depend on nothing, so the adjoint drops them.",
    "concatenation": "each part of a concatenation lands in its own block, so each part's adjoint is "
                     "its block of the adjoint.",
    "image patches (im2col)": "a pixel is read by every window that covers it, so its adjoint "
                              "collects the adjoints of all those windows (col2im).",
    "patches back to the image (col2im)": "col2im adds window entries onto pixels, so its adjoint "
                                          "reads the pixels back into windows (im2col).",
    "recurrence over time (scan)": "every step reuses the same weights and hands its state to the "
                                   "next, so the adjoint runs the steps backwards and sums the "
                                   "weights' contributions over time.",
    "batch normalisation": "shifting a column of $z$ by a constant, or scaling it, leaves the "
                           "normalised value unchanged, so the mean's path takes the adjoint's batch "
                           "mean out and the variance's path its component along the normalised value: "
                           "the gradient is centred (each column sums to 0) and decorrelated from the "
                           "normalised value (orthogonal to it, exactly so when $\\epsilon = 0$).",
    "training/evaluation choice": "training computes the training form, so the gradient is that form's.",
    "matrix inverse": "inverting a perturbed matrix changes the inverse by $-A^{-1} dA A^{-1}$, "
                      "which gives the transposed inverses around the adjoint.",
    "linear solve": "a solve is a product with the inverse, so its adjoint is a solve with the "
                    "transposed matrix.",
    "log |determinant|": "the log-determinant's slope is the inverse transpose, "
                         "$\\partial \\log|\\det A| / \\partial A = A^{-\\top}$.",
    "trace": "the trace adds the diagonal, so the adjoint is the identity times the incoming scalar.",
    "outer product": "each entry of $u v^{\\top}$ is $u_i v_j$, so $u$'s adjoint weights the rows by $v$.",
    "index contraction (einsum)": "a contraction is linear in each operand, so its adjoint is "
                                  "another contraction with the other operands.",
}
