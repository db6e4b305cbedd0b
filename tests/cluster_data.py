"""Shared test data: a 12-user x 10-item matrix with two clear taste clusters."""

import numpy as np
import scipy.sparse as sp

# Two taste clusters: users 0-5 use items 0-4, users 6-11 use items 5-9. Weights > 1 are repeat
# events; they must count once wherever a model binarises.
TWO_CLUSTERS = sp.csr_matrix(
    np.array(
        [
            [3, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 2, 1, 0, 0, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 0, 0, 0, 0, 0],
            [1, 0, 0, 1, 1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0, 0, 0, 0],
            [1, 0, 1, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 0, 1, 0, 0, 1, 1],
            [0, 0, 0, 0, 0, 1, 1, 0, 0, 1],
            [0, 0, 0, 0, 0, 1, 0, 1, 0, 2],
        ],
        dtype=np.float32,
    )
)
CLUSTER_OF_USER = np.repeat([0, 1], 6)
CLUSTER_OF_ITEM = np.repeat([0, 1], 5)
