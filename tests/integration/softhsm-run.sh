# SPDX-License-Identifier: Apache-2.0
# Runs a C integration test (itest_*.c) inside a private SoftHSM2 token:
#   P11JWT_TEST_MODULE   the SoftHSM2 module
#   P11JWT_TEST_TOKEN    the token label ("itest")
#   P11JWT_TEST_PIN_FILE a 0600 file with the user PIN
#   P11JWT_TEST_DIR      a private scratch folder
#   P11JWT_TEST_SO_PIN   the SO PIN (tests that re-initialise the token)
. "$(dirname "$0")/lib.sh"
softhsm_init itest
export P11JWT_TEST_MODULE=$SOFTHSM_MODULE
export P11JWT_TEST_TOKEN=itest
export P11JWT_TEST_PIN_FILE=$(pin_file)
export P11JWT_TEST_DIR=$T
export P11JWT_TEST_SO_PIN=$TEST_SO_PIN
"$@"
