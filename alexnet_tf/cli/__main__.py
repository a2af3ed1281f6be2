"""`python -m alexnet_tf.cli`: the same as the `alexnet-tf` console script."""

import sys

from alexnet_tf.cli import main

sys.exit(main())
