// Passkey ceremonies on Tessera's pages: the browser signs (or creates a key for) the challenge the
// server put in the page, and the form carries the answer back. Everything else works without scripts.
(function () {
  'use strict';
  var lib = window.SimpleWebAuthnBrowser;

  function say(form, message) {
    var slot = form.querySelector('[data-passkey-message]');
    if (!slot) return;
    slot.textContent = message;
    slot.hidden = false;
  }

  function unsupported(form) {
    if (lib && lib.browserSupportsWebAuthn()) return false;
    say(form, 'This browser cannot use passkeys. Use another browser, or choose another method.');
    return true;
  }

  // The user closed the browser's dialog, or no key of theirs answered: they may try again.
  function refused(form, error) {
    var name = error && error.name;
    if (name === 'NotAllowedError' || name === 'AbortError') say(form, 'No passkey was used. Try again, or choose another method.');
    else if (name === 'InvalidStateError') say(form, 'This passkey is already registered to your account.');
    else say(form, 'Your browser could not use a passkey: ' + ((error && error.message) || 'unknown error') + '.');
  }

  document.querySelectorAll('form[data-passkey-sign-in]').forEach(function (form) {
    var busy = false;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      if (busy || unsupported(form)) return;
      busy = true;
      lib.startAuthentication({ optionsJSON: JSON.parse(form.getAttribute('data-options')) })
        .then(function (answer) {
          form.querySelector('input[name=response]').value = JSON.stringify(answer);
          form.submit();
        }, function (error) {
          busy = false;
          refused(form, error);
        });
    });
  });

  document.querySelectorAll('form[data-passkey-register]').forEach(function (form) {
    var busy = false;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      if (busy || unsupported(form)) return;
      busy = true;
      var inline = form.getAttribute('data-options');
      if (inline) {
        // The options came with the page (a sign-in's enrolment step).
        lib.startRegistration({ optionsJSON: JSON.parse(inline) }).then(function (answer) {
          form.querySelector('input[name=response]').value = JSON.stringify(answer);
          form.submit();
        }, function (error) {
          busy = false;
          refused(form, error);
        });
        return;
      }
      var body = new URLSearchParams({ csrf: form.querySelector('input[name=csrf]').value });
      fetch(form.getAttribute('data-options-url'), { method: 'POST', body: body, credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (response) {
          // Not JSON: the server wants something first (a fresh verification); the plain form asks for it.
          if (!response.ok || !/json/.test(response.headers.get('content-type') || '')) {
            var flag = document.createElement('input');
            flag.type = 'hidden';
            flag.name = 'script';
            flag.value = '1';
            form.appendChild(flag);
            form.submit();
            return null;
          }
          return response.json().then(function (options) {
            return lib.startRegistration({ optionsJSON: options }).then(function (answer) {
              form.querySelector('input[name=response]').value = JSON.stringify(answer);
              form.submit();
            });
          });
        })
        .catch(function (error) {
          busy = false;
          refused(form, error);
        });
    });
  });
})();
