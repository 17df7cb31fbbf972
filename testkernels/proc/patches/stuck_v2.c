/* Replacement for stuck(), which never leaves its stack. */
void stuck(void) {}
