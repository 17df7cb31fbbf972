/* Replacement for victim(), which sits below a signal frame. */
void victim(void) {}
