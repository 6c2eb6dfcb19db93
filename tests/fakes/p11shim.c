/* placeholder: replaced by the fault-injection shim */
int p11shim_placeholder(void);
int p11shim_placeholder(void) { return 0; }
